import BPFRuntime
import FuzzDriver

/// One fuzz input through what `tracer object run|pack` reads from an untrusted file: a JSON package (JSON,
/// base64, zlib with its declared size, the meta's shape) and then its object, or else the input as an ELF
/// object (libbpf's ELF and BTF parsing, this project's BTF walk into `BTFType`s, variable defaults, generated
/// meta and its validation), and the input's bytes decoded as a record of every export type.
func fuzzOne(_ data: UnsafeRawBufferPointer) {
    let bytes = [UInt8](data)
    var objectBytes = bytes
    var meta: PackageMeta?
    if BPFObjectPackage.isPackage(bytes) {
        guard let package = try? BPFObjectPackage(json: bytes) else { return }
        objectBytes = package.object
        meta = package.meta
    }
    guard let object = try? BPFObjectFile(bytes: objectBytes, name: "fuzz") else { return }
    let generated = PackageMeta(generatedFrom: object)
    try? (meta ?? generated).validate(against: object)
    for variable in object.variables { _ = variable.defaultValue.json }
    for map in object.maps {
        _ = map.histogramSlots
        if let key = map.keyType { _ = BTFValue(key, in: data).text }
        if let value = map.valueType { _ = BTFValue(value, in: data).text }
    }
    for exported in object.exportTypes { _ = BTFValue(exported.type, in: data).json }
}

runFuzzTarget(named: "ObjectFuzz", fuzzOne)
