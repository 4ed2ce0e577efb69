extension BPFObjectFile.Map {
    /// The map kinds the runner reads events from: ring buffer (Linux 5.8) and perf event array.
    public var isEventOutput: Bool { type == 27 || type == 4 }

    /// A value struct with a `slots` array of integers: a histogram the way libbpf-tools lays them out.
    public var histogramSlots: (offset: Int, count: Int, slotSize: Int)? {
        guard case .structure(_, _, _, let members)? = valueType,
              let slots = members.first(where: { $0.name == "slots" }),
              case .array(.integer(_, let size, _, _, _), let count) = slots.type, count > 0, count <= 4096, size > 0, size <= 8,
              slots.bitOffset / 8 + count * size <= valueSize else { return nil }
        return (slots.bitOffset / 8, count, size)
    }
}

extension PackageMeta {
    /// The sample types the runner prints.
    public static let sampleTypes = ["log2_hist", "linear_hist", "default_kv"]

    /// Meta for `object`, as `tracer object pack` writes it: its export types, the `.rodata`/`.bss` variables
    /// with their defaults, its maps (histogram-shaped ones sampled as log2 histograms every second), programs
    /// with their sections, and the runner's defaults for buffers, polling and the header line.
    public init(generatedFrom object: BPFObjectFile) {
        let exportTypes = object.exportTypes.map { entry -> ExportType in
            var members: [ExportMember] = []
            if case .structure(_, _, _, let fields) = entry.type { members = fields.map { ExportMember(name: $0.name, type: $0.type.cName) } }
            return ExportType(name: entry.name, members: members, size: entry.type.size, typeID: nil)
        }
        let sections = [".rodata", ".bss"].compactMap { section -> DataSection? in
            let variables = object.variables.filter { $0.section == section && !$0.name.contains(".") }.map { variable in
                Variable(name: variable.name, type: variable.type.cName, description: nil,
                         default: section == ".rodata" ? JSONScalar(variable.defaultValue) : nil)
            }
            return variables.isEmpty ? nil : DataSection(name: section, variables: variables)
        }
        let maps = object.maps.filter { !$0.isInternal }.map { map in
            Map(name: map.name, ident: map.name, mmaped: false,
                sample: map.histogramSlots == nil ? nil : Sample(interval: 1000, type: "log2_hist", unit: nil, clearMap: false))
        }
        self.init(exportTypes: exportTypes, bpfSkel: Skeleton(
            objName: object.name, doc: nil, dataSections: sections, maps: maps,
            progs: object.programs.map { Prog(name: $0.name, attach: $0.section, link: true) }))
        perfBufferPages = 64
        perfBufferTimeMs = 10
        pollTimeoutMs = 100
        printHeader = true
        debugVerbose = false
    }

    /// Checks that every map, type, variable and program the meta names exists in `object`, and that sample
    /// settings are ones the runner knows.
    public func validate(against object: BPFObjectFile) throws(PackageError) {
        for type in exportTypes ?? [] where object.structType(named: type.name) == nil {
            throw PackageError("meta.export_types names struct \(type.name), which the object's BTF does not have")
        }
        for map in bpfSkel.maps ?? [] {
            guard object.maps.contains(where: { $0.name == map.name }) else {
                throw PackageError("meta.bpf_skel.maps names map \(map.name), which the object does not have")
            }
            if let type = map.sample?.type, !Self.sampleTypes.contains(type) {
                throw PackageError("meta.bpf_skel.maps[\(map.name)].sample.type is \(type); expected one of \(Self.sampleTypes.joined(separator: ", "))")
            }
            if let interval = map.sample?.interval, interval <= 0 {
                throw PackageError("meta.bpf_skel.maps[\(map.name)].sample.interval must be positive (milliseconds), not \(interval)")
            }
        }
        for section in bpfSkel.dataSections ?? [] {
            for variable in section.variables where !object.variables.contains(where: { $0.name == variable.name && $0.section == section.name }) {
                throw PackageError("meta.bpf_skel.data_sections names variable \(variable.name) in \(section.name), which the object does not have")
            }
        }
        for program in bpfSkel.progs ?? [] where !object.programs.contains(where: { $0.name == program.name }) {
            throw PackageError("meta.bpf_skel.progs names program \(program.name), which the object does not have")
        }
    }
}

extension JSONScalar {
    /// A variable's default as JSON: numbers, bools and text; nil for other types.
    init?(_ value: BTFValue) {
        switch value {
        case .signed(let number): self = .integer(number)
        case .unsigned(let number): self = .unsigned(number)
        case .bool(let flag): self = .bool(flag)
        case .float(let number): self = .double(number)
        case .text(let text): self = .string(text)
        case .enumCase(let name, let number): self = name.map { .string($0) } ?? .integer(number)
        default: return nil
        }
    }
}
