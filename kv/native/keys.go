package native

import (
	"strconv"
	"strings"
)

// On a Redis Cluster a command must go to the node serving its keys' slot,
// and rueidis routes a command by the keys it was built with. kv.Client
// takes commands as plain strings, so the transport has to know where each
// command's keys are. commandKeys knows the commands below (the legacy key
// specs of COMMAND INFO, plus the commands that count their keys). A
// command it does not know is sent to any node and, if that node does not
// serve its key, follows the MOVED redirection: slower (one more round
// trip), never wrong.

// keySpec: keys at first, first+step, ... up to last; a negative last
// counts from the end (-1: the last argument). args[0] is the command.
type keySpec struct{ first, last, step int }

var (
	oneKey     = keySpec{1, 1, 1}
	allKeys    = keySpec{1, -1, 1}
	twoKeys    = keySpec{1, 2, 1}
	keyValues  = keySpec{1, -1, 2} // MSET k v k v
	beforeLast = keySpec{1, -2, 1} // BLPOP k k timeout
)

var keySpecs = map[string]keySpec{}

func init() {
	for _, name := range strings.Fields(`
		APPEND BITCOUNT BITFIELD BITFIELD_RO BITPOS DECR DECRBY DUMP EXPIRE
		EXPIREAT EXPIRETIME GEOADD GEODIST GEOHASH GEOPOS GEORADIUS
		GEORADIUSBYMEMBER GEORADIUS_RO GEORADIUSBYMEMBER_RO GEOSEARCH GET GETBIT
		GETDEL GETEX GETRANGE GETSET HDEL HEXISTS HEXPIRE HEXPIREAT HEXPIRETIME
		HGET HGETALL HGETDEL HGETEX HINCRBY HINCRBYFLOAT HKEYS HLEN HMGET HMSET
		HPERSIST HPEXPIRE HPEXPIREAT HPEXPIRETIME HPTTL HRANDFIELD HSCAN HSET
		HSETEX HSETNX HSTRLEN HTTL HVALS INCR INCRBY INCRBYFLOAT LINDEX LINSERT
		LLEN LPOP LPOS LPUSH LPUSHX LRANGE LREM LSET LTRIM PERSIST PEXPIRE
		PEXPIREAT PEXPIRETIME PFADD PSETEX PTTL RESTORE RPOP RPUSH RPUSHX SADD
		SCARD SET SETBIT SETEX SETNX SETRANGE SISMEMBER SMEMBERS SMISMEMBER
		SORT SORT_RO SPOP SRANDMEMBER SREM SSCAN STRLEN SUBSTR TTL TYPE XACK
		XADD XAUTOCLAIM XCLAIM XDEL XLEN XPENDING XRANGE XREVRANGE XSETID XTRIM
		ZADD ZCARD ZCOUNT ZINCRBY ZLEXCOUNT ZMSCORE ZPOPMAX ZPOPMIN ZRANDMEMBER
		ZRANGE ZRANGEBYLEX ZRANGEBYSCORE ZRANK ZREM ZREMRANGEBYLEX
		ZREMRANGEBYRANK ZREMRANGEBYSCORE ZREVRANGE ZREVRANGEBYLEX
		ZREVRANGEBYSCORE ZREVRANK ZSCAN ZSCORE`) {
		keySpecs[name] = oneKey
	}
	for _, name := range strings.Fields(`
		DEL EXISTS MGET PFCOUNT PFMERGE SDIFF SDIFFSTORE SINTER SINTERSTORE
		SUNION SUNIONSTORE TOUCH UNLINK WATCH`) {
		keySpecs[name] = allKeys
	}
	for _, name := range strings.Fields(`
		BLMOVE BRPOPLPUSH COPY GEOSEARCHSTORE LCS LMOVE RENAME RENAMENX
		RPOPLPUSH SMOVE ZRANGESTORE`) {
		keySpecs[name] = twoKeys
	}
	for _, name := range strings.Fields(`MSET MSETNX`) {
		keySpecs[name] = keyValues
	}
	for _, name := range strings.Fields(`BLPOP BRPOP BZPOPMAX BZPOPMIN`) {
		keySpecs[name] = beforeLast
	}
	keySpecs["BITOP"] = keySpec{2, -1, 1} // BITOP op dest key...
}

// numKeysAt: commands whose argument at that index counts the keys that
// follow it.
var numKeysAt = map[string]int{
	"EVAL": 2, "EVALSHA": 2, "EVAL_RO": 2, "EVALSHA_RO": 2, "FCALL": 2, "FCALL_RO": 2,
	"BLMPOP": 2, "BZMPOP": 2,
	"ZUNION": 1, "ZINTER": 1, "ZDIFF": 1, "ZINTERCARD": 1, "SINTERCARD": 1,
	"LMPOP": 1, "ZMPOP": 1,
	// Destination first, then numkeys: ZUNIONSTORE dest n k...
	"ZUNIONSTORE": 2, "ZINTERSTORE": 2, "ZDIFFSTORE": 2,
}

// commandKeys returns the indexes in args of the command's keys, in
// increasing order; nil for a command without keys or one it does not
// know. Indexes are always within args.
func commandKeys(args []string) []int {
	if len(args) < 2 {
		return nil
	}
	name := strings.ToUpper(args[0])
	if spec, ok := keySpecs[name]; ok {
		last := spec.last
		if last < 0 {
			last += len(args)
		}
		last = min(last, len(args)-1)
		var out []int
		for i := spec.first; i <= last; i += spec.step {
			out = append(out, i)
		}
		return out
	}
	if at, ok := numKeysAt[name]; ok {
		var out []int
		if strings.HasSuffix(name, "STORE") {
			out = append(out, 1) // the destination
		}
		if at < len(args) {
			if n, err := strconv.Atoi(args[at]); err == nil {
				for i := at + 1; i <= at+n && i < len(args); i++ {
					out = append(out, i)
				}
			}
		}
		return out
	}
	switch name {
	case "XREAD", "XREADGROUP":
		// ... STREAMS k1 k2 id1 id2
		for i := 1; i < len(args); i++ {
			if strings.EqualFold(args[i], "STREAMS") {
				n := (len(args) - i - 1) / 2
				var out []int
				for j := i + 1; j <= i+n; j++ {
					out = append(out, j)
				}
				return out
			}
		}
	case "OBJECT", "XINFO", "XGROUP":
		// OBJECT ENCODING key, XINFO STREAM key, XGROUP CREATE key ...;
		// their HELP subcommands have none.
		if len(args) >= 3 && !strings.EqualFold(args[1], "HELP") {
			return []int{2}
		}
	case "MEMORY":
		if len(args) >= 3 && strings.EqualFold(args[1], "USAGE") {
			return []int{2}
		}
	}
	return nil
}
