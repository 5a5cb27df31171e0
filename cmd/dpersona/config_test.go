package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dpersona.json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServeConfigFile(t *testing.T) {
	p := writeConfig(t, `{
  "data_dir": "/srv/dpersona",
  "dicom_listen": "0.0.0.0:104",
  "ae_title": "GATEWAY",
  "ae_titles": ["GATEWAY_RT"],
  "quiet_window": "45s",
  "peers": [{"ae_title": "CT1", "hosts": ["10.0.0.0/24"]}],
  "deny_sop_classes": ["1.2.840.10008.5.1.4.1.1.4"],
  "timeouts": {"idle": "2m"},
  "routes": {"anything": "for another role"}
}`)
	c, err := loadServeConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/srv/dpersona" || c.DICOMListen != "0.0.0.0:104" || time.Duration(c.QuietWindow) != 45*time.Second {
		t.Fatalf("config %+v", c)
	}
	pol := c.policy()
	if len(pol.AETitles) != 2 || pol.AETitles[1] != "GATEWAY_RT" || len(pol.Peers) != 1 || pol.Peers[0].Hosts[0] != "10.0.0.0/24" {
		t.Fatalf("policy %+v", pol)
	}
	u := c.ulConfig()
	if u.IdleTimeout != 2*time.Minute || u.ARTIM != 30*time.Second {
		t.Fatalf("timeouts: unset ones keep their defaults, got %+v", u)
	}
	if got := c.unclaimedSections(); len(got) != 1 || got[0] != "routes" {
		t.Fatalf("unclaimed %v", got)
	}
	var routes map[string]string
	if ok, err := c.Section("routes", &routes); !ok || err != nil || routes["anything"] == "" {
		t.Fatalf("section: %v %v %v", ok, err, routes)
	}
	if got := c.unclaimedSections(); len(got) != 0 {
		t.Fatalf("claimed section still reported: %v", got)
	}
}

func TestServeConfigErrorsNameTheCause(t *testing.T) {
	for body, want := range map[string]string{
		`{"quiet_window": 10}`:                                     "duration must be a string",
		`{"quiet_window": "soon"}`:                                 "soon",
		`{"ae_title": "A_TITLE_THAT_IS_TOO_LONG"}`:                 "AE title",
		`{"peers": [{"ae_title": "X", "hosts": ["10.0.0.0/99"]}]}`: "10.0.0.0/99",
		`{"data_dir": ""}`:                                         "data_dir",
		`{not json`:                                                "invalid character",
	} {
		_, err := loadServeConfig(writeConfig(t, body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want an error naming %q, got %v", body, want, err)
		}
	}
	if _, err := loadServeConfig(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("a missing config file was accepted")
	}
}

func TestServeConfigTLSAndLimits(t *testing.T) {
	c, err := loadServeConfig(writeConfig(t, `{
  "dicom_listen": "",
  "tls": {"listen": ":2762", "cert_file": "/etc/dpersona/server.pem", "key_file": "/etc/dpersona/server.key", "client_ca_file": "/etc/dpersona/ca.pem"},
  "max_instance_mb": 64
}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.Listen != ":2762" || c.TLS.ClientCAFile != "/etc/dpersona/ca.pem" || c.MaxInstanceMB != 64 || c.DICOMListen != "" {
		t.Fatalf("config %+v", c)
	}
	if len(c.sections) != 0 {
		t.Fatalf("tls or max_instance_mb taken for another role's section: %v", c.sections)
	}
	for body, want := range map[string]string{
		`{"tls": {"listen": ":2762"}}`:    "tls.listen needs tls.cert_file and tls.key_file",
		`{"tls": {"cert_file": "a.pem"}}`: "tls.listen is empty",
		`{"dicom_listen": ""}`:            "no DICOM listener",
		`{"max_instance_mb": -1}`:         "max_instance_mb is negative",
	} {
		if _, err := loadServeConfig(writeConfig(t, body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", body, err, want)
		}
	}
}
