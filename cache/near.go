package cache

import (
	"container/list"
	"strings"
	"sync"
)

// DefaultNearBytes bounds the Redis backend's near copies by default.
const DefaultNearBytes = 32 << 20

// near is an LRU of decoded entries by Redis key, bounded by the bytes of
// their values. Methods on a nil *near do nothing.
type near struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	lru   *list.List
	byKey map[string]*list.Element
}

type nearEntry struct {
	key    string
	gen    uint64
	e      Entry
	header string // the stored encoding's fields before the value
}

func newNear(max int64) *near {
	return &near{max: max, lru: list.New(), byKey: map[string]*list.Element{}}
}

func (n *near) size(ne *nearEntry) int64 {
	return int64(len(ne.key) + len(ne.e.Value) + len(ne.e.ContentType) + len(ne.e.ETag) + len(ne.header) + 64)
}

func (n *near) get(key string) (*nearEntry, bool) {
	if n == nil {
		return nil, false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	el, ok := n.byKey[key]
	if !ok {
		return nil, false
	}
	n.lru.MoveToFront(el)
	return el.Value.(*nearEntry), true
}

func (n *near) put(key string, gen uint64, e Entry, header string) {
	if n == nil || header == "" {
		return
	}
	ne := &nearEntry{key: key, gen: gen, e: e, header: header}
	sz := n.size(ne)
	if sz > n.max/4 {
		return // one entry must not evict a quarter of the rest
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if el, ok := n.byKey[key]; ok {
		n.removeLocked(el)
	}
	n.byKey[key] = n.lru.PushFront(ne)
	n.bytes += sz
	for n.bytes > n.max {
		n.removeLocked(n.lru.Back())
	}
}

func (n *near) remove(key string) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if el, ok := n.byKey[key]; ok {
		n.removeLocked(el)
	}
}

func (n *near) removeLocked(el *list.Element) {
	ne := el.Value.(*nearEntry)
	n.lru.Remove(el)
	delete(n.byKey, ne.key)
	n.bytes -= n.size(ne)
}

// entryHeader is the start of an encoded entry up to and including the
// space after its ETag: "c1 <gen> <stored µs> <ttl µs> <type> <etag> ".
// Two entries with the same header are the same write: stored-at has
// microseconds, and the HTTP layer's ETag is a hash of the body.
func entryHeader(enc string) string {
	i := 0
	for range 6 {
		j := strings.IndexByte(enc[i:], ' ')
		if j < 0 {
			return ""
		}
		i += j + 1
	}
	return enc[:i]
}
