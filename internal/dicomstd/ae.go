package dicomstd

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxAETitleLength is the longest AE title (PS3.5 table 6.2-1, VR AE).
const MaxAETitleLength = 16

// CheckAETitle tells why ae is not a valid AE title, or returns nil. The rule is the AE value
// representation of PS3.5 table 6.2-1: at most 16 characters of the default character repertoire
// without backslash and control characters, and not only spaces (16 spaces would mean "no
// application name"). Leading and trailing spaces are not significant: compare titles after
// TrimAETitle.
func CheckAETitle(ae string) error {
	if strings.TrimSpace(ae) == "" {
		return errors.New("empty")
	}
	if len(ae) > MaxAETitleLength {
		return fmt.Errorf("%q is longer than %d characters", ae, MaxAETitleLength)
	}
	for _, c := range ae {
		if c < 0x20 || c > 0x7e || c == '\\' {
			return fmt.Errorf("%q has a character not allowed in an AE title (backslash, control or non-ASCII)", ae)
		}
	}
	return nil
}

// TrimAETitle removes what is not significant in an AE title: leading and trailing spaces, and
// the NUL bytes some peers pad the fixed 16-byte PDU fields with.
func TrimAETitle(s string) string { return strings.Trim(s, " \x00") }

// Address is a DICOM application entity on the network: its AE title and TCP address.
type Address struct {
	AETitle string
	Host    string // a name or an IP address (IPv6 without brackets)
	Port    int
}

// HostPort is Host and Port joined for net.Dial (IPv6 in brackets).
func (a Address) HostPort() string {
	if strings.Contains(a.Host, ":") {
		return "[" + a.Host + "]:" + strconv.Itoa(a.Port)
	}
	return a.Host + ":" + strconv.Itoa(a.Port)
}

func (a Address) String() string { return a.AETitle + "@" + a.HostPort() }

// ParseAddress reads "AET@HOST:PORT", the form every command and option naming a peer uses. The
// AE title is everything before the last "@" and must pass CheckAETitle; HOST may be an IPv6
// address in brackets; PORT is 1..65535. Errors say which part is wrong, without repeating s.
func ParseAddress(s string) (Address, error) {
	at := strings.LastIndex(s, "@")
	if at <= 0 {
		return Address{}, errors.New("want AET@HOST:PORT")
	}
	ae, hostport := s[:at], s[at+1:]
	colon := strings.LastIndex(hostport, ":")
	if colon < 0 {
		return Address{}, errors.New("want AET@HOST:PORT (no port)")
	}
	host := hostport[:colon]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if host == "" {
		return Address{}, errors.New("want AET@HOST:PORT (host is empty)")
	}
	port, err := strconv.Atoi(hostport[colon+1:])
	if err != nil || port <= 0 || port > 65535 {
		return Address{}, fmt.Errorf("port %q is not in 1..65535", hostport[colon+1:])
	}
	a := Address{AETitle: ae, Host: host, Port: port}
	if err := CheckAETitle(ae); err != nil {
		return a, fmt.Errorf("AE title: %w", err)
	}
	return a, nil
}
