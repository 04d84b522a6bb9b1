package bucketfs

import (
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
}

const maxDirs = 1024

func newListCache(ttl time.Duration) *listCache {
	return &listCache{ttl: ttl, dirs: map[string]*listing{}}
}

// get returns the fresh listing of the directory with key prefix dir.
func (c *listCache) get(dir string) (map[string]entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.dirs[dir]
	if !ok || time.Since(l.at) >= c.ttl {
		return nil, false
	}
	return l.entries, true
}

func (c *listCache) put(dir string, entries map[string]entry) {
	if c.ttl == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.dirs) >= maxDirs {
		c.dirs = map[string]*listing{}
	}
	c.dirs[dir] = &listing{at: time.Now(), entries: entries}
}

// set records a change this mount made, in a cached listing if any: a
// fresh listing stays right, so lookups need not ask the store.
func (c *listCache) set(dir, name string, e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.dirs[dir]
	if !ok {
		return
	}
	m := make(map[string]entry, len(l.entries)+1) // readers may hold the old map
	for k, v := range l.entries {
		m[k] = v
	}
	if e == nil {
		delete(m, name)
	} else {
		m[name] = *e
	}
	l.entries = m
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
