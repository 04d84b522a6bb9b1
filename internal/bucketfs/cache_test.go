package bucketfs

import (
	"fmt"
	"testing"
	"time"
)

// A listing handed out is the caller's: later changes and puts do not show
// in it, and a put does not keep the caller's map. Readdir iterates what
// get returned while creates change the cached listing in place.
func TestListCacheCopies(t *testing.T) {
	c := newListCache(time.Minute)
	mine := map[string]entry{"a": {size: 1}}
	c.put("d/", mine)
	mine["b"] = entry{}
	if _, found, fresh := c.lookup("d/", "b"); !fresh || found {
		t.Fatalf("lookup b after the caller changed its map: found %v fresh %v", found, fresh)
	}
	got, ok := c.get("d/")
	if !ok || len(got) != 1 {
		t.Fatalf("get: %v %v", got, ok)
	}
	c.set("d/", "c", &entry{size: 3})
	c.set("d/", "a", nil)
	if len(got) != 1 || got["a"].size != 1 {
		t.Fatalf("a listing handed out changed: %v", got)
	}
	if e, found, _ := c.lookup("d/", "c"); !found || e.size != 3 {
		t.Fatalf("lookup c: %v %v", e, found)
	}
	if _, found, _ := c.lookup("d/", "a"); found {
		t.Fatal("a was removed")
	}
	if _, _, fresh := c.lookup("other/", "x"); fresh {
		t.Fatal("a directory never listed is fresh")
	}
}

// BenchmarkListCacheSet: one create recorded in a cached listing of n
// entries. Flat in n (it was a copy of the listing per create, so n creates
// in one directory cost n squared).
func BenchmarkListCacheSet(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			c := newListCache(time.Hour)
			m := make(map[string]entry, n)
			for i := range n {
				m[fmt.Sprintf("f%06d", i)] = entry{}
			}
			c.put("d/", m)
			b.ResetTimer()
			for i := range b.N {
				c.set("d/", "new", &entry{size: int64(i)})
			}
		})
	}
}
