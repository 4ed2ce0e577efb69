/// Redis command names (redis.io/commands) as static strings, found from a command's bytes without
/// allocating: `db.operation.name` of every span of a known command costs no copy.
enum RedisCommands {
    static let names: [String] = [
        "APPEND", "AUTH", "BITCOUNT", "BITFIELD", "BITOP", "BITPOS", "BLMOVE", "BLPOP", "BRPOP", "BRPOPLPUSH", "BZPOPMAX",
        "BZPOPMIN", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "COPY", "DBSIZE", "DECR", "DECRBY", "DEL", "DISCARD", "DUMP",
        "ECHO", "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "EXEC", "EXISTS", "EXPIRE", "EXPIREAT", "FCALL", "FLUSHALL", "FLUSHDB",
        "FUNCTION", "GEOADD", "GEODIST", "GEOHASH", "GEOPOS", "GEOSEARCH", "GET", "GETBIT", "GETDEL", "GETEX", "GETRANGE",
        "GETSET", "HDEL", "HELLO", "HEXISTS", "HGET", "HGETALL", "HINCRBY", "HINCRBYFLOAT", "HKEYS", "HLEN", "HMGET", "HMSET",
        "HRANDFIELD", "HSCAN", "HSET", "HSETNX", "HSTRLEN", "HVALS", "INCR", "INCRBY", "INCRBYFLOAT", "INFO", "KEYS",
        "LASTSAVE", "LINDEX", "LINSERT", "LLEN", "LMOVE", "LMPOP", "LPOP", "LPOS", "LPUSH", "LPUSHX", "LRANGE", "LREM", "LSET",
        "LTRIM", "MEMORY", "MGET", "MSET", "MSETNX", "MULTI", "OBJECT", "PERSIST", "PEXPIRE", "PEXPIREAT", "PFADD", "PFCOUNT",
        "PFMERGE", "PING", "PSETEX", "PSUBSCRIBE", "PTTL", "PUBLISH", "PUBSUB", "PUNSUBSCRIBE", "QUIT", "RANDOMKEY", "READONLY",
        "RENAME", "RENAMENX", "RESET", "RESTORE", "RPOP", "RPOPLPUSH", "RPUSH", "RPUSHX", "SADD", "SAVE", "SCAN", "SCARD",
        "SCRIPT", "SDIFF", "SDIFFSTORE", "SELECT", "SET", "SETBIT", "SETEX", "SETNX", "SETRANGE", "SINTER", "SINTERCARD",
        "SINTERSTORE", "SISMEMBER", "SMEMBERS", "SMISMEMBER", "SMOVE", "SORT", "SPOP", "SRANDMEMBER", "SREM", "SSCAN",
        "SSUBSCRIBE", "STRLEN", "SUBSCRIBE", "SUNION", "SUNIONSTORE", "SUNSUBSCRIBE", "SWAPDB", "TIME", "TOUCH", "TTL", "TYPE",
        "UNLINK", "UNSUBSCRIBE", "UNWATCH", "WAIT", "WATCH", "XACK", "XADD", "XAUTOCLAIM", "XCLAIM", "XDEL", "XGROUP", "XINFO",
        "XLEN", "XPENDING", "XRANGE", "XREAD", "XREADGROUP", "XREVRANGE", "XTRIM", "ZADD", "ZCARD", "ZCOUNT", "ZDIFF",
        "ZINCRBY", "ZINTER", "ZINTERSTORE", "ZLEXCOUNT", "ZMPOP", "ZMSCORE", "ZPOPMAX", "ZPOPMIN", "ZRANDMEMBER", "ZRANGE",
        "ZRANGEBYLEX", "ZRANGEBYSCORE", "ZRANGESTORE", "ZRANK", "ZREM", "ZREMRANGEBYLEX", "ZREMRANGEBYRANK",
        "ZREMRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYSCORE", "ZREVRANK", "ZSCAN", "ZSCORE", "ZUNION", "ZUNIONSTORE",
    ]

    /// A name's bytes upper-cased and packed into two words (little-endian, zero-padded): names are at most 16
    /// letters, so equal keys are equal names and a lookup compares integers.
    struct Key: Comparable {
        var low: UInt64
        var high: UInt64

        init?(_ bytes: UnsafeRawBufferPointer) {
            guard bytes.count > 0, bytes.count <= 16 else { return nil }
            low = 0
            high = 0
            for (position, byte) in bytes.enumerated() {
                let upper = UInt64(byte >= 0x61 && byte <= 0x7A ? byte - 0x20 : byte)
                if position < 8 { low |= upper << (8 * position) } else { high |= upper << (8 * (position - 8)) }
            }
        }

        init(_ name: StaticString) { self = name.withUTF8Buffer { Key(UnsafeRawBufferPointer($0))! } }

        static func < (left: Key, right: Key) -> Bool { (left.low, left.high) < (right.low, right.high) }

        static let select = Key("SELECT")
        /// The commands after which a connection carries messages, not replies.
        static let subscriptions = [Key("SUBSCRIBE"), Key("PSUBSCRIBE"), Key("SSUBSCRIBE")]
    }

    /// The names' keys in order, and each key's name.
    private static let sorted: (keys: [Key], names: [String]) = {
        let pairs = names.map { name in (key: Array(name.utf8).withUnsafeBytes { Key($0)! }, name: name) }
            .sorted { $0.key < $1.key }
        return (pairs.map(\.key), pairs.map(\.name))
    }()

    /// The known command spelt by `bytes` (any case), or nil: a binary search of the keys.
    static func known(_ bytes: UnsafeRawBufferPointer) -> String? {
        guard let key = Key(bytes) else { return nil }
        let table = sorted
        var (lower, upper) = (0, table.keys.count)
        while lower < upper {
            let middle = (lower + upper) / 2
            if table.keys[middle] < key { lower = middle + 1 } else { upper = middle }
        }
        return lower < table.keys.count && table.keys[lower] == key ? table.names[lower] : nil
    }

    /// The command name for `db.operation.name`: a known one, or the bytes upper-cased when they are a
    /// plausible name (letters, digits, `_`, `.`, `|`, at most 32 bytes: module commands); nil for anything else.
    static func name(_ bytes: UnsafeRawBufferPointer) -> String? {
        if let known = known(bytes) { return known }
        guard !bytes.isEmpty, bytes.count <= 32, bytes.allSatisfy({ byte in
            (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x5F || byte == 0x2E || byte == 0x7C
        }) else { return nil }
        return String(decoding: bytes.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }, as: UTF8.self)
    }
}
