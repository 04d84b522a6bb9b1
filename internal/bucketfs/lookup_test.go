package bucketfs_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// Many files created in one directory, over many cache TTLs: once the
// directory's listing is stale, the next new name lists the directory again
// (one request for up to 1,000 names) instead of asking the store for each
// name, so the creates cost a request per TTL, not one each. What another
// client put meanwhile is in the new listing.
func TestCreatesRelistTheDirectory(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.CacheTTL = 200 * time.Millisecond
	s, mnt := e.mount(t, "m", cfg)
	dir := filepath.Join(mnt, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lookups, listings := s.StoreLookups(), s.StoreListings()
	const n = 200
	start := time.Now()
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if i%20 == 19 { // at least 5 TTLs in all, however fast the creates
			time.Sleep(cfg.CacheTTL / 2)
		}
	}
	ttls := int64(time.Since(start)/cfg.CacheTTL) + 1
	asked := s.StoreLookups() - lookups
	listed := s.StoreListings() - listings
	t.Logf("%d creates over %d TTLs: %d lookups, %d listings", n, ttls, asked, listed)
	// Per TTL: a listing of d, and a lookup of d itself when the kernel's
	// entry for it expires. Asking name by name made a request per
	// create after the first TTL.
	if asked+listed > 3*ttls+4 {
		t.Errorf("%d creates over %d TTLs asked the store %d times for a name and listed the directory %d times", n, ttls, asked, listed)
	}
	if listed == 0 {
		t.Errorf("%d creates over %d TTLs never listed the directory again", n, ttls)
	}

	// Another client's object shows after the TTL, through a relisting.
	if _, err := e.cl.PutObject(context.Background(), bucket, "d/other", bytes.NewReader([]byte("elsewhere")), 9, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * cfg.CacheTTL)
	if got, err := os.ReadFile(filepath.Join(dir, "other")); err != nil || string(got) != "elsewhere" {
		t.Fatalf("object put by another client: %q %v", got, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != n+1 {
		t.Fatalf("the directory lists %d entries (%v), want %d", len(ents), err, n+1)
	}
}
