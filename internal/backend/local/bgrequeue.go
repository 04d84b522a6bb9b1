package local

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/volplug/volplug/internal/backend"
	"github.com/volplug/volplug/internal/loop"
)

// requeueFormats starts, at start-up, the background format of every
// volume whose format a crash or a stop cut short (its formatting mark is
// set) and of every blank volume never formatted (made while the option was
// off, or whose job never ran): otherwise its first stage would pay for
// mkfs. The format's own rules apply (formatIfBlank): a filesystem found
// is left alone, data without a mark is never formatted over. A volume a
// loop device still holds is someone's (a stage in progress elsewhere) and
// is left to its stage.
func (b *Backend) requeueFormats(vols []*backend.Volume, devs []loop.Device) {
	if !b.formatOnCreate {
		return
	}
	for _, v := range vols {
		if v.Source != "" || !wantsBackgroundFormat(v, nil) || v.Fresh {
			continue
		}
		image := b.pool.image(v.ID)
		var st unix.Stat_t
		if err := unix.Stat(image, &st); err != nil {
			continue
		}
		if !v.Formatting && st.Blocks != 0 {
			continue // formatted (and maybe mounted) already
		}
		if held(devs, image) {
			continue
		}
		lock, err := lockDir(b.pool.volumeDir(v.ID))
		if err != nil {
			continue // another process works on it
		}
		klog.InfoS("formatting in the background at start-up", "volume", v.ID, "interrupted", v.Formatting)
		b.startFormat(v, lock, false)
	}
}

// held reports whether a loop device is backed by image.
func held(devs []loop.Device, image string) bool {
	id, err := loop.IdentityOf(image)
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		return true // unknown: leave it to its stage
	}
	for _, d := range devs {
		if d.Backing.FileID == id {
			return true
		}
	}
	return false
}
