internal import CLibBPF
#if canImport(Glibc)
import Glibc
#endif

/// A BPF map: typed lookup, update, delete and iteration over its fd (`bpf_map_*_elem`, `bpf_map_get_next_key`,
/// `bpf_map_*_batch` where the kernel has them, Linux 5.6), and pinning in bpffs.
/// Keys and values are fixed-size C layouts (`BitwiseCopyable`), checked against the map's sizes.
public final class BPFMap: @unchecked Sendable {
    public let name: String
    public let fd: Int32
    public let type: UInt32
    public let keySize: Int
    public let valueSize: Int
    public let maxEntries: UInt32
    /// Keeps the object that owns `fd` alive; nil when this map owns its fd.
    private let owner: BPFObject?

    init(objectMap map: OpaquePointer, object: BPFObject) {
        name = String(cString: bpf_map__name(map))
        fd = bpf_map__fd(map)
        type = bpf_map__type(map).rawValue
        keySize = Int(bpf_map__key_size(map))
        valueSize = Int(bpf_map__value_size(map))
        maxEntries = bpf_map__max_entries(map)
        owner = object
    }

    /// Creates a map that belongs to no object (`bpf_map_create`, libbpf 0.7), e.g. one shared by several.
    public init(create type: BPFMapType, name: String, keySize: Int, valueSize: Int, maxEntries: UInt32) throws {
        let fd = bpf_map_create(bpf_map_type(type.rawValue), name, UInt32(keySize), UInt32(valueSize), maxEntries, nil)
        guard fd >= 0 else { throw BPFError("create \(type) map \(name)", errno: errno) }
        self.name = name
        self.fd = fd
        self.type = type.rawValue
        self.keySize = keySize
        self.valueSize = valueSize
        self.maxEntries = maxEntries
        owner = nil
    }

    deinit {
        if owner == nil { close(fd) }
    }

    private var isPerCPU: Bool {
        [BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH].map(\.rawValue).contains(type)
    }

    private func checkSizes<Key, Value>(_: Key.Type, _: Value.Type, _ operation: String) throws {
        guard MemoryLayout<Key>.size == keySize, MemoryLayout<Value>.size == valueSize else {
            throw BPFError("\(operation) on map \(name): key/value of \(MemoryLayout<Key>.size)/\(MemoryLayout<Value>.size) bytes, map has \(keySize)/\(valueSize)", errno: EINVAL)
        }
    }

    /// The value stored under `key`, or nil when there is none.
    public func lookup<Key: BitwiseCopyable, Value: BitwiseCopyable>(_ key: Key, as _: Value.Type = Value.self) throws -> Value? {
        try checkSizes(Key.self, Value.self, "lookup")
        var key = key
        return try withUnsafeTemporaryAllocation(of: Value.self, capacity: 1) { value in
            let result = bpf_map_lookup_elem(fd, &key, value.baseAddress)
            if result == -ENOENT { return nil }
            try check(result, "lookup in map \(name)")
            return value[0]
        }
    }

    /// One value per possible CPU for per-CPU maps (`libbpf_num_possible_cpus()` values, 8-byte aligned).
    public func lookupPerCPU<Key: BitwiseCopyable, Value: BitwiseCopyable>(_ key: Key, as _: Value.Type = Value.self) throws -> [Value]? {
        try checkSizes(Key.self, Value.self, "per-CPU lookup")
        guard isPerCPU else { throw BPFError("per-CPU lookup on map \(name), which is not per-CPU", errno: EINVAL) }
        let cpus = Int(libbpf_num_possible_cpus())
        let stride = (valueSize + 7) & ~7
        var key = key
        var buffer = [UInt8](repeating: 0, count: stride * cpus)
        let result = buffer.withUnsafeMutableBytes { bpf_map_lookup_elem(fd, &key, $0.baseAddress) }
        if result == -ENOENT { return nil }
        try check(result, "lookup in map \(name)")
        return buffer.withUnsafeBytes { raw in (0..<cpus).map { raw.loadUnaligned(fromByteOffset: $0 * stride, as: Value.self) } }
    }

    /// Stores `value` under `key` (`BPF_ANY`; `BPF_NOEXIST`/`BPF_EXIST` through `flags`).
    public func update<Key: BitwiseCopyable, Value: BitwiseCopyable>(_ key: Key, _ value: Value, flags: UInt64 = 0) throws {
        try checkSizes(Key.self, Value.self, "update")
        var key = key, value = value
        try check(bpf_map_update_elem(fd, &key, &value, flags), "update map \(name)")
    }

    /// Removes `key`; returns whether it was there.
    @discardableResult
    public func delete<Key: BitwiseCopyable>(_ key: Key) throws -> Bool {
        guard MemoryLayout<Key>.size == keySize else { throw BPFError("delete from map \(name): wrong key size", errno: EINVAL) }
        var key = key
        let result = bpf_map_delete_elem(fd, &key)
        if result == -ENOENT { return false }
        try check(result, "delete from map \(name)")
        return true
    }

    /// Every key, walked with `bpf_map_get_next_key`.
    public func keys<Key: BitwiseCopyable>(as _: Key.Type = Key.self) throws -> [Key] {
        guard MemoryLayout<Key>.size == keySize else { throw BPFError("iterate map \(name): wrong key size", errno: EINVAL) }
        var keys: [Key] = []
        try withUnsafeTemporaryAllocation(of: Key.self, capacity: 2) { buffer in
            var previous: UnsafeMutablePointer<Key>? = nil
            let next = buffer.baseAddress! + 1
            while true {
                let result = bpf_map_get_next_key(fd, previous, next)
                if result == -ENOENT { return }
                try check(result, "iterate map \(name)")
                keys.append(next.pointee)
                buffer[0] = next.pointee
                previous = buffer.baseAddress
            }
        }
        return keys
    }

    /// Every entry, read with `bpf_map_lookup_batch` (Linux 5.6) in chunks, or key by key where the kernel
    /// or map type has no batch operation.
    public func entries<Key: BitwiseCopyable, Value: BitwiseCopyable>(as _: (Key, Value).Type = (Key, Value).self) throws -> [(Key, Value)] {
        try checkSizes(Key.self, Value.self, "read entries")
        if let batched = try lookupBatch(Key.self, Value.self) { return batched }
        return try keys(as: Key.self).compactMap { key in try lookup(key, as: Value.self).map { (key, $0) } }
    }

    private func lookupBatch<Key: BitwiseCopyable, Value: BitwiseCopyable>(_: Key.Type, _: Value.Type) throws -> [(Key, Value)]? {
        let chunk = 256
        let keyBuffer = UnsafeMutablePointer<Key>.allocate(capacity: chunk)
        let valueBuffer = UnsafeMutablePointer<Value>.allocate(capacity: chunk)
        defer { keyBuffer.deallocate(); valueBuffer.deallocate() }
        var options = bpf_map_batch_opts()
        options.sz = MemoryLayout<bpf_map_batch_opts>.size
        var result: [(Key, Value)] = []
        var inBatch: UInt64 = 0, outBatch: UInt64 = 0
        var first = true
        while true {
            var count = UInt32(chunk)
            let status = withUnsafeMutablePointer(to: &inBatch) { inPointer in
                bpf_map_lookup_batch(fd, first ? nil : inPointer, &outBatch, keyBuffer, valueBuffer, &count, &options)
            }
            let error = status < 0 ? -status : 0
            if error != 0 && error != ENOENT {
                if first && (error == EINVAL || error == ENOTSUP || error == 524) { return nil }
                throw BPFError("batch lookup in map \(name)", errno: error)
            }
            for index in 0..<Int(count) { result.append((keyBuffer[index], valueBuffer[index])) }
            if error == ENOENT { return result }
            inBatch = outBatch
            first = false
        }
    }

    /// Pins the map at `path` in bpffs (`bpf_obj_pin`), so it outlives this process.
    public func pin(at path: String) throws {
        try check(bpf_obj_pin(fd, path), "pin map \(name) at \(path)")
    }

    /// Removes a pin made by `pin(at:)`.
    public func unpin(at path: String) throws {
        guard unlink(path) == 0 else { throw BPFError("unpin map \(name) at \(path)", errno: errno) }
    }
}

/// BPF map types the runtime creates itself (`enum bpf_map_type`).
public enum BPFMapType: UInt32, Sendable, CustomStringConvertible {
    case hash = 1, array = 2, perfEventArray = 4, percpuArray = 6, ringBuffer = 27

    public var description: String {
        switch self {
        case .hash: "hash"
        case .array: "array"
        case .perfEventArray: "perf event array"
        case .percpuArray: "per-CPU array"
        case .ringBuffer: "ring buffer"
        }
    }
}

extension BPFMap {
    /// Whether values are per CPU (one value per possible CPU on lookup).
    public var isPerCPUValue: Bool { isPerCPU }

    /// Every entry as raw bytes: the key, and the value (one per possible CPU for per-CPU maps), walked with
    /// `bpf_map_get_next_key` + `bpf_map_lookup_elem`; for maps whose layout is known only from BTF. At most
    /// `limit` entries.
    public func rawEntries(limit: Int = 1 << 16) throws -> [(key: [UInt8], values: [[UInt8]])] {
        let cpus = isPerCPU ? Int(libbpf_num_possible_cpus()) : 1
        let stride = isPerCPU ? (valueSize + 7) & ~7 : valueSize
        var result: [(key: [UInt8], values: [[UInt8]])] = []
        var previous: [UInt8]? = nil
        var next = [UInt8](repeating: 0, count: max(keySize, 1))
        var value = [UInt8](repeating: 0, count: max(stride * cpus, 1))
        while result.count < limit {
            let status = next.withUnsafeMutableBytes { nextPointer in
                if var previous { return previous.withUnsafeMutableBytes { bpf_map_get_next_key(fd, $0.baseAddress, nextPointer.baseAddress) } }
                return bpf_map_get_next_key(fd, nil, nextPointer.baseAddress)
            }
            if status == -ENOENT { break }
            try check(status, "iterate map \(name)")
            let found = next.withUnsafeBytes { key in value.withUnsafeMutableBytes { bpf_map_lookup_elem(fd, key.baseAddress, $0.baseAddress) } }
            if found == 0 {
                let values = (0..<cpus).map { Array(value[($0 * stride)..<($0 * stride + valueSize)]) }
                result.append((Array(next.prefix(keySize)), values))
            } else if found != -ENOENT {
                try check(found, "lookup in map \(name)")
            }
            previous = next
        }
        return result
    }

    /// Empties the map: deletes every key of a hash-like map; writes zeros over every element of an array
    /// (array elements cannot be deleted).
    public func clear() throws {
        let arrays = [BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY].map(\.rawValue)
        let keys = try rawEntries().map(\.key)
        if arrays.contains(type) {
            let cpus = isPerCPU ? Int(libbpf_num_possible_cpus()) : 1
            let zeros = [UInt8](repeating: 0, count: (isPerCPU ? (valueSize + 7) & ~7 : valueSize) * cpus)
            for key in keys {
                try check(key.withUnsafeBytes { k in zeros.withUnsafeBytes { bpf_map_update_elem(fd, k.baseAddress, $0.baseAddress, 0) } },
                          "clear map \(name)")
            }
            return
        }
        for key in keys {
            let status = key.withUnsafeBytes { bpf_map_delete_elem(fd, $0.baseAddress) }
            if status != -ENOENT { try check(status, "clear map \(name)") }
        }
    }
}
