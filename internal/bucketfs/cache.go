package bucketfs

import (
	"maps"
	"strings"
	"sync"
	"time"
)

// listCache keeps directory listings for the TTL. It is bounded: past
// maxDirs listings it starts again from empty.
type listCache struct {
	ttl  time.Duration
	mu   sync.Mutex
	dirs map[string]*listing
}

type listing struct {
	at      time.Time
	entries map[string]entry
	// misses counts the names asked of the store one by one since the
	// listing went stale (see relistNow).
	misses int
}

const maxDirs = 1024

func newListCache(ttl time.Duration) *listCache {
	return &listCache{ttl: ttl, dirs: map[string]*listing{}}
}

// lookup answers for one name from the fresh listing of the directory
// with key prefix dir; fresh is false when there is none.
func (c *listCache) lookup(dir, name string) (e entry, found, fresh bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.fresh(dir)
	if l == nil {
		return entry{}, false, false
	}
	e, found = l.entries[name]
	return e, found, true
}

// get returns a copy of the fresh listing of the directory with key prefix
// dir, for the caller to keep.
func (c *listCache) get(dir string) (map[string]entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.fresh(dir)
	if l == nil {
		return nil, false
	}
	return maps.Clone(l.entries), true
}

func (c *listCache) fresh(dir string) *listing {
	l, ok := c.dirs[dir]
	if !ok || time.Since(l.at) >= c.ttl {
		return nil
	}
	return l
}

// put caches a listing, a copy of entries (the caller keeps its map).
func (c *listCache) put(dir string, entries map[string]entry) {
	if c.ttl == 0 {
		return
	}
	entries = maps.Clone(entries)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.dirs) >= maxDirs {
		c.dirs = map[string]*listing{}
	}
	c.dirs[dir] = &listing{at: time.Now(), entries: entries}
}

// listPage is how many names one LIST request returns (S3's default and
// most).
const listPage = 1000

// relistNow says whether a lookup in the directory with key prefix dir,
// which the cache could not answer, should list the whole directory again
// rather than ask for the one name. Asking costs one request a name;
// listing costs one request per listPage names and answers every lookup
// for the TTL. So a directory is listed again once the names asked one by
// one since its listing went stale have cost as many requests as listing
// it would (never more than twice the cheaper of the two ways, whatever
// the lookups to come): at once for a directory of one page, the case of
// many files created in one directory. A directory never listed is asked
// name by name: its size is unknown.
func (c *listCache) relistNow(dir string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.dirs[dir]
	if !ok || c.fresh(dir) != nil {
		return false
	}
	l.misses++
	if l.misses < 1+len(l.entries)/listPage {
		return false
	}
	l.misses = 0 // one relist at a time; the others ask as before
	return true
}

// set records a change this mount made, in a cached listing if any: a
// fresh listing stays right, so lookups need not ask the store. The
// listing's map is changed in place (no one outside holds it), so N
// creates in one directory cost N, not N squared.
func (c *listCache) set(dir, name string, e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.dirs[dir]
	if !ok {
		return
	}
	if e == nil {
		delete(l.entries, name)
	} else {
		l.entries[name] = *e
	}
}

// drop forgets every listing under prefix (a renamed or removed tree).
func (c *listCache) drop(prefix string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.dirs {
		if strings.HasPrefix(k, prefix) {
			delete(c.dirs, k)
		}
	}
}
