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

    /// The names by length, as bytes, for a case-insensitive lookup.
    private static let byLength: [[(bytes: [UInt8], name: String)]] = {
        var table = [[(bytes: [UInt8], name: String)]](repeating: [], count: 17)
        for name in names { table[name.utf8.count].append((Array(name.utf8), name)) }
        return table
    }()

    /// The known command spelt by `bytes` (any case), or nil.
    static func known(_ bytes: UnsafeRawBufferPointer) -> String? {
        guard bytes.count > 0, bytes.count < byLength.count else { return nil }
        for entry in byLength[bytes.count] where zip(entry.bytes, bytes).allSatisfy({ $0 == ($1 >= 0x61 && $1 <= 0x7A ? $1 - 0x20 : $1) }) {
            return entry.name
        }
        return nil
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
