// Package ociimage builds container images without a daemon or a registry:
// layers from tar streams, made reproducible, an image from them, and one
// archive that every runtime loads (an OCI image layout with a docker-style
// manifest.json beside it, as `docker save` writes since Docker 25).
//
// It is a build tool (cmd/mkimage); volplug itself never links it.
package ociimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Normalize copies a root filesystem tarball (mmdebstrap's, or any) into tw
// as a layer: names without "./", the root entry and device nodes dropped
// (a runtime mounts its own /dev), owners numeric only, times no later than
// epoch and access/change times gone, and only xattr PAX records kept. So
// the layer's bytes depend on the files alone. It returns the content of
// the regular files named in capture that it met.
func Normalize(src io.Reader, tw *tar.Writer, epoch time.Time, capture ...string) (map[string][]byte, error) {
	captured := map[string][]byte{}
	tr := tar.NewReader(src)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return captured, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read rootfs tar: %w", err)
		}
		name := cleanName(h.Name)
		if name == "" {
			continue // the root directory itself
		}
		switch h.Typeflag {
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			continue
		case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink:
		default:
			return nil, fmt.Errorf("rootfs tar: %s: unexpected entry type %q", h.Name, h.Typeflag)
		}
		out := &tar.Header{
			Typeflag: h.Typeflag,
			Name:     name,
			Linkname: h.Linkname,
			Size:     h.Size,
			Mode:     h.Mode,
			Uid:      h.Uid,
			Gid:      h.Gid,
			ModTime:  clamp(h.ModTime, epoch),
			Format:   tar.FormatPAX,
		}
		switch h.Typeflag {
		case tar.TypeDir:
			out.Name += "/"
		case tar.TypeLink:
			out.Linkname = cleanName(h.Linkname)
		}
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				if out.PAXRecords == nil {
					out.PAXRecords = map[string]string{}
				}
				out.PAXRecords[k] = v
			}
		}
		if err := tw.WriteHeader(out); err != nil {
			return nil, fmt.Errorf("layer: %s: %w", name, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		var r io.Reader = tr
		var buf *bytes.Buffer
		if slices.Contains(capture, name) {
			buf = &bytes.Buffer{}
			r = io.TeeReader(tr, buf)
		}
		if _, err := io.Copy(tw, r); err != nil {
			return nil, fmt.Errorf("layer: %s: %w", name, err)
		}
		if buf != nil {
			captured[name] = buf.Bytes()
		}
	}
}

// File is one regular file of a layer built from files.
type File struct {
	Name string // path in the image, without a leading slash
	Mode int64
	Data []byte
}

// WriteFiles writes files into tw as regular files owned by root, with
// their parents' directories left to the layers below.
func WriteFiles(tw *tar.Writer, files []File, epoch time.Time) error {
	for _, f := range files {
		h := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     cleanName(f.Name),
			Size:     int64(len(f.Data)),
			Mode:     f.Mode,
			ModTime:  epoch,
			Format:   tar.FormatPAX,
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("layer: %s: %w", f.Name, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return fmt.Errorf("layer: %s: %w", f.Name, err)
		}
	}
	return nil
}

// GzipLayer writes a layer into the file at path through fill, gzip
// compressed, and returns it as an OCI layer. Go's gzip writer is
// deterministic (no name, no time in its header), so equal tars give equal
// blobs with the same Go release.
func GzipLayer(file string, fill func(tw *tar.Writer) error) (v1.Layer, error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.DefaultCompression)
	if err != nil {
		f.Close()
		return nil, err
	}
	tw := tar.NewWriter(zw)
	err = fill(tw)
	for _, step := range []func() error{tw.Close, zw.Close, bw.Flush, f.Sync} {
		if err != nil {
			break
		}
		err = step()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write layer %s: %w", file, err)
	}
	return tarball.LayerFromFile(file, tarball.WithMediaType(types.OCILayer))
}

func cleanName(name string) string {
	name = path.Clean("/" + name)
	return strings.TrimPrefix(name, "/")
}

func clamp(t, epoch time.Time) time.Time {
	if t.After(epoch) {
		return epoch
	}
	return t
}
