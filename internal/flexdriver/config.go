package flexdriver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ConfigEnv names a config file to use instead of the one beside the
// executable; tests point it into a temporary directory.
const ConfigEnv = "VOLPLUG_FLEX_CONFIG"

// configFile is looked for beside the executable, i.e. in the driver's own
// <plugindir>/volplug~<driver>/ directory, where an installer can drop it.
const configFile = "volplug.json"

// Config is the driver's configuration. kubelet gives a flex driver no
// flags and no environment, so a file is the only way to configure it.
type Config struct {
	// Pool is the local backend's pool directory.
	Pool string `json:"pool,omitempty"`
	// Node is this node's name as Kubernetes knows it.
	Node string `json:"node,omitempty"`
	// Attach makes init report attach:true, so controller-manager calls
	// attach/detach. Only right where controller-manager and the volumes
	// share a machine (single-node clusters), since the pool is node-local.
	Attach bool `json:"attach,omitempty"`
	// LogFile is where the JSON log goes; "syslog" sends it to syslog.
	LogFile string `json:"logFile,omitempty"`
	// MounterSocket is where the s3 driver finds `volplug mounter` (it
	// starts one, detached, when none answers).
	MounterSocket string `json:"mounterSocket,omitempty"`
}

func defaultConfig(driver string) Config {
	host, _ := os.Hostname()
	return Config{
		Pool: filepath.Join("/var/lib/volplug/flex", driver),
		// kubelet lower-cases the host name it registers the node under.
		Node:          strings.ToLower(host),
		LogFile:       filepath.Join("/var/log/volplug", "flex-"+driver+".log"),
		MounterSocket: "/run/volplug/mounter.sock",
	}
}

// loadConfig reads $VOLPLUG_FLEX_CONFIG, else volplug.json beside the
// executable, else uses the defaults. Fields a file leaves out keep their
// defaults; unknown fields are an error, so a typo is not silently ignored.
func loadConfig(driver string) (Config, error) {
	cfg := defaultConfig(driver)
	path, explicit := os.LookupEnv(ConfigEnv)
	if !explicit {
		exe, err := os.Executable()
		if err != nil {
			return cfg, nil
		}
		path = filepath.Join(filepath.Dir(exe), configFile)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if cfg.Pool == "" || cfg.Node == "" {
		return cfg, fmt.Errorf("config %s: pool and node must not be empty", path)
	}
	return cfg, nil
}
