/// The HPACK Huffman code (RFC 7541 Appendix B). The code is canonical: codes of one length are consecutive
/// and ordered by symbol, shorter lengths first, so the code lengths alone define it; decoding walks the
/// lengths (RFC 7541 §5.2).
enum HPACKHuffman {
    /// Code length in bits of each symbol 0…255 and of EOS (256), from RFC 7541 Appendix B.
    static let codeLengths: [UInt8] = [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
        28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
        6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
        5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
        13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
        7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
        15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
        6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
        20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
        24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
        22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
        21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
        26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
        19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
        20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
        26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
        30,    ]

    static let shortestLength = 5
    static let longestLength = 30

    /// Per code length: the first code of that length, how many codes have it, and where its symbols start
    /// in `symbolsByCode`.
    private static let canonical: (firstCode: [UInt32], count: [UInt32], offset: [Int], symbolsByCode: [UInt16]) = {
        var count = [UInt32](repeating: 0, count: longestLength + 1)
        for length in codeLengths { count[Int(length)] += 1 }
        var firstCode = [UInt32](repeating: 0, count: longestLength + 1)
        var offset = [Int](repeating: 0, count: longestLength + 1)
        var code: UInt32 = 0, index = 0
        for length in 1...longestLength {
            firstCode[length] = code
            offset[length] = index
            code = (code + count[length]) << 1
            index += Int(count[length])
        }
        let symbols = (0..<UInt16(codeLengths.count)).sorted { (codeLengths[Int($0)], $0) < (codeLengths[Int($1)], $1) }
        return (firstCode, count, offset, symbols)
    }()

    /// Decodes `encoded` (RFC 7541 §5.2): appends at most `limit` symbols to `output` and returns how many the
    /// string holds (so an entry's size is right even when the output was cut), or nil for an invalid string
    /// (EOS inside it, padding longer than 7 bits or not all ones).
    static func decode(_ encoded: UnsafeRawBufferPointer, into output: inout [UInt8], limit: Int) -> Int? {
        let table = canonical
        var decoded = 0
        var code: UInt32 = 0
        var length = 0
        var allOnes = true
        for byte in encoded {
            for shift in stride(from: 7, through: 0, by: -1) {
                let bit = UInt32(byte >> UInt8(shift)) & 1
                code = code << 1 | bit
                length += 1
                allOnes = allOnes && bit == 1
                guard length >= shortestLength else { continue }
                let index = code &- table.firstCode[length]
                if code >= table.firstCode[length] && index < table.count[length] {
                    let symbol = table.symbolsByCode[table.offset[length] + Int(index)]
                    guard symbol < 256 else { return nil }
                    if decoded < limit { output.append(UInt8(symbol)) }
                    decoded += 1
                    code = 0
                    length = 0
                    allOnes = true
                } else if length >= longestLength {
                    return nil
                }
            }
        }
        // What is left is padding: the most significant bits of EOS (all ones), shorter than a byte.
        guard length < 8, allOnes else { return nil }
        return decoded
    }
}
