package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"dpersona/gateway"
	"dpersona/gateway/ul"
	"dpersona/internal/lifecycle"
)

// duration is a time.Duration written as a Go duration string ("10s", "5m") in JSON.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"10s\": %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

func (d duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// serveConfig is the JSON configuration file of `dpersona serve`. Every field has a default, so
// an empty file (or none) is a working gateway on embedded defaults. Top-level keys this struct
// does not know are kept as sections (nats, workers, routes, destinations) that runServe reads.
type serveConfig struct {
	// DataDir holds incoming/, studies/ and nats/ (docs/architecture.md).
	DataDir string `json:"data_dir"`
	// DICOMListen and HTTPListen are HOST:PORT addresses.
	DICOMListen string `json:"dicom_listen"`
	HTTPListen  string `json:"http_listen"`
	// AETitle is the gateway's called AE title; AETitles adds further ones (studies are grouped
	// per called AE).
	AETitle  string   `json:"ae_title"`
	AETitles []string `json:"ae_titles,omitempty"`
	// QuietWindow: a study is complete after this long without new instances.
	QuietWindow duration `json:"quiet_window"`
	// Peers is the allow-list of calling AEs (and hosts); empty accepts any calling AE.
	Peers []gateway.Peer `json:"peers,omitempty"`
	// AllowSOPClasses / DenySOPClasses adjust the default acceptance of Verification and every
	// standard storage SOP class.
	AllowSOPClasses []string `json:"allow_sop_classes,omitempty"`
	DenySOPClasses  []string `json:"deny_sop_classes,omitempty"`
	AcceptBigEndian bool     `json:"accept_big_endian,omitempty"`
	// NativeOnly accepts only uncompressed images (by default JPEG, JPEG-LS, JPEG 2000 and RLE are
	// accepted, stored as received and decoded for inference).
	NativeOnly      bool `json:"native_only,omitempty"`
	MaxAssociations int  `json:"max_associations"`
	// MaxPendingPerHost bounds the connections of one address not yet admitted (0: the gateway's
	// default, max_associations and at least 8).
	MaxPendingPerHost int    `json:"max_pending_per_host,omitempty"`
	MaxPDULength      uint32 `json:"max_pdu_length"`
	// MinFreeMB: below this much free disk space new associations are rejected (transient,
	// local limit exceeded) and C-STOREs get "out of resources".
	MinFreeMB uint64 `json:"min_free_mb"`
	// MaxInstanceMB refuses a larger C-STORE data set with "out of resources" (0 = no limit).
	MaxInstanceMB int64 `json:"max_instance_mb"`
	// TLS configures DICOM over TLS on its own listener (see dicomTLSConfig).
	TLS      dicomTLSConfig `json:"tls"`
	Timeouts struct {
		ARTIM duration `json:"artim"`
		Read  duration `json:"read"`
		Idle  duration `json:"idle"`
		Write duration `json:"write"`
		// Pending bounds TLS handshake + A-ASSOCIATE-RQ of a new connection (not yet admitted).
		Pending duration `json:"pending"`
	} `json:"timeouts"`
	// ShutdownTimeout is the one deadline of a shutdown (SIGTERM or a failed listener): every
	// listener, worker and the bus stop within it. Keep it below the deployment's grace period
	// (systemd TimeoutStopSec, Kubernetes terminationGracePeriodSeconds).
	ShutdownTimeout duration `json:"shutdown_timeout"`
	// LogLevel: debug, info, warn, error.
	LogLevel string `json:"log_level"`
	// APIToken protects /api/ with a bearer token ("" = open; env DPERSONA_API_TOKEN overrides).
	APIToken string `json:"api_token,omitempty"`

	// sections are the top-level keys of other roles, raw; claimed records which were read.
	sections map[string]json.RawMessage
	claimed  map[string]bool
}

// dicomTLSConfig is the DICOM TLS listener: TLS 1.2+ on Listen with the server certificate and
// key; with ClientCAFile, only clients with a certificate from one of its CAs get in. The plain
// listener (dicom_listen) keeps running unless it is set to "".
type dicomTLSConfig struct {
	Listen       string `json:"listen"`
	CertFile     string `json:"cert_file"`
	KeyFile      string `json:"key_file"`
	ClientCAFile string `json:"client_ca_file"`
}

// defaultServeConfig is what `dpersona serve` runs with when nothing is configured.
func defaultServeConfig() serveConfig {
	c := serveConfig{
		DataDir:         "var/data",
		DICOMListen:     "127.0.0.1:11112",
		HTTPListen:      "127.0.0.1:8080",
		AETitle:         "DPERSONA",
		QuietWindow:     duration(10 * time.Second),
		MaxAssociations: 32,
		MaxPDULength:    256 * 1024,
		MinFreeMB:       512,
		MaxInstanceMB:   2048,
		LogLevel:        "info",
		ShutdownTimeout: duration(lifecycle.DefaultShutdownTimeout),
	}
	c.Timeouts.Pending = duration(gateway.DefaultPendingTimeout)
	d := ul.DefaultConfig()
	c.Timeouts.ARTIM = duration(d.ARTIM)
	c.Timeouts.Read = duration(d.ReadTimeout)
	c.Timeouts.Idle = duration(d.IdleTimeout)
	c.Timeouts.Write = duration(d.WriteTimeout)
	return c
}

// loadServeConfig reads path (if not empty) over the defaults. Keys this struct does not know are
// kept as sections for other roles; serve warns about any that no role read (a misspelt key).
func loadServeConfig(path string) (serveConfig, error) {
	c := defaultServeConfig()
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	known := knownConfigKeys()
	c.sections = map[string]json.RawMessage{}
	for k, v := range all {
		if !known[k] {
			c.sections[k] = v
		}
	}
	return c, c.validate()
}

func knownConfigKeys() map[string]bool {
	b, _ := json.Marshal(defaultServeConfig())
	var m map[string]any
	json.Unmarshal(b, &m)
	keys := map[string]bool{}
	for k := range m {
		keys[k] = true
	}
	for _, k := range []string{"ae_titles", "peers", "allow_sop_classes", "deny_sop_classes", "accept_big_endian", "api_token", "max_pending_per_host", "native_only"} {
		keys[k] = true
	}
	return keys
}

func (c *serveConfig) validate() error {
	var problems []string
	if c.DataDir == "" {
		problems = append(problems, "data_dir is empty")
	}
	if c.DICOMListen == "" && c.TLS.Listen == "" {
		problems = append(problems, "dicom_listen and tls.listen are both empty (no DICOM listener)")
	}
	if c.TLS.Listen != "" && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		problems = append(problems, "tls.listen needs tls.cert_file and tls.key_file")
	}
	if c.TLS.Listen == "" && (c.TLS.CertFile != "" || c.TLS.ClientCAFile != "") {
		problems = append(problems, "tls.cert_file/tls.client_ca_file are set but tls.listen is empty")
	}
	if c.MaxInstanceMB < 0 {
		problems = append(problems, "max_instance_mb is negative")
	}
	if c.QuietWindow <= 0 {
		problems = append(problems, "quiet_window must be positive")
	}
	if c.ShutdownTimeout <= 0 || time.Duration(c.ShutdownTimeout) > 10*time.Minute {
		problems = append(problems, fmt.Sprintf("shutdown_timeout %v is not between 0 and 10m", time.Duration(c.ShutdownTimeout)))
	}
	if c.MaxPDULength != 0 && c.MaxPDULength < 4096 {
		problems = append(problems, fmt.Sprintf("max_pdu_length %d is below 4096", c.MaxPDULength))
	}
	if len(problems) > 0 {
		return fmt.Errorf("config: %s", strings.Join(problems, "; "))
	}
	pol := c.policy()
	return pol.Validate()
}

func (c *serveConfig) policy() gateway.Policy {
	titles := append([]string{c.AETitle}, c.AETitles...)
	return gateway.Policy{AETitles: titles, Peers: c.Peers, AllowSOPClasses: c.AllowSOPClasses, DenySOPClasses: c.DenySOPClasses, AcceptBigEndian: c.AcceptBigEndian, NativeOnly: c.NativeOnly}
}

func (c *serveConfig) ulConfig() ul.Config {
	return ul.Config{
		MaxPDULength: c.MaxPDULength,
		ARTIM:        time.Duration(c.Timeouts.ARTIM),
		ReadTimeout:  time.Duration(c.Timeouts.Read),
		IdleTimeout:  time.Duration(c.Timeouts.Idle),
		WriteTimeout: time.Duration(c.Timeouts.Write),
	}
}

// Section decodes the raw top-level key name (a role's own configuration) into v; it reports
// false when the file has no such key.
func (c *serveConfig) Section(name string, v any) (bool, error) {
	if c.claimed == nil {
		c.claimed = map[string]bool{}
	}
	c.claimed[name] = true
	raw, ok := c.sections[name]
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("config section %q: %w", name, err)
	}
	return true, nil
}
