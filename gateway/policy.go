package gateway

import (
	"fmt"
	"net"
	"strings"

	"dpersona/dicomio"
	"dpersona/gateway/dimse"
	"dpersona/gateway/part10"
	"dpersona/gateway/pdu"
	"dpersona/internal/dicomstd"
	"dpersona/internal/obs"
)

// Peer is an allowed calling application entity. An empty Hosts list allows any address.
type Peer struct {
	AETitle string   `json:"ae_title"`
	Hosts   []string `json:"hosts,omitempty"` // IP addresses or CIDR prefixes
}

// storageSOPClassPrefix covers the Storage SOP classes of PS3.4 annex B (CT, MR, SEG, RT, SR, ...).
const storageSOPClassPrefix = "1.2.840.10008.5.1.4.1.1."

// otherStorageSOPClasses are the standard storage classes outside that arc.
var otherStorageSOPClasses = []string{
	"1.2.840.10008.5.1.4.34.7",  // RT Beams Delivery Instruction Storage
	"1.2.840.10008.5.1.4.34.10", // RT Brachy Application Setup Delivery Instruction Storage
	"1.2.840.10008.5.1.4.38.1",  // Hanging Protocol Storage
	"1.2.840.10008.5.1.4.39.1",  // Color Palette Storage
	"1.2.840.10008.5.1.4.43.1",  // Generic Implant Template Storage
	"1.2.840.10008.5.1.4.44.1",  // Implant Assembly Template Storage
	"1.2.840.10008.5.1.4.45.1",  // Implant Template Group Storage
}

// IsStorageSOPClass reports whether uid is a standard Storage SOP class.
func IsStorageSOPClass(uid string) bool {
	if strings.HasPrefix(uid, storageSOPClassPrefix) {
		return true
	}
	for _, c := range otherStorageSOPClasses {
		if uid == c {
			return true
		}
	}
	return false
}

// DecodableTransferSyntaxes are the transfer syntaxes the processing pipeline reads: uncompressed
// and the compressed ones (JPEG, JPEG-LS, JPEG 2000, RLE) that dicomio decodes. Instances are stored as received, compressed or
// not; decoding happens only when a series is processed.
var DecodableTransferSyntaxes = dicomio.DecodableTransferSyntaxes()

// Policy decides which associations and presentation contexts are accepted.
type Policy struct {
	// AETitles are the called AE titles this gateway answers to (at least one).
	AETitles []string
	// Peers, when non-empty, is the allow-list of calling AEs (and their hosts).
	Peers []Peer
	// AllowSOPClasses are accepted in addition to Verification and the standard storage classes
	// (e.g. private classes).
	AllowSOPClasses []string
	// DenySOPClasses are refused even when they are standard storage classes.
	DenySOPClasses []string
	// AcceptBigEndian also accepts explicit VR big endian (retired, but decodable).
	AcceptBigEndian bool
	// NativeOnly accepts only uncompressed transfer syntaxes for images, so senders decompress
	// before sending (by default compressed ones are accepted and stored as received).
	NativeOnly bool
}

func (p *Policy) calledAEAllowed(ae string) bool {
	for _, a := range p.AETitles {
		if dicomstd.TrimAETitle(a) == ae {
			return true
		}
	}
	return false
}

// peerAllowed checks the calling AE and its address against the allow-list; aeKnown tells a
// known AE calling from an unlisted host apart from an unknown AE.
func (p *Policy) peerAllowed(callingAE string, remote net.Addr) (allowed, aeKnown bool) {
	if len(p.Peers) == 0 {
		return true, true
	}
	var ip net.IP
	if tcp, ok := remote.(*net.TCPAddr); ok {
		ip = tcp.IP
	}
	for _, peer := range p.Peers {
		if dicomstd.TrimAETitle(peer.AETitle) != callingAE {
			continue
		}
		aeKnown = true
		if len(peer.Hosts) == 0 {
			return true, true
		}
		for _, h := range peer.Hosts {
			if hostMatches(h, ip) {
				return true, true
			}
		}
	}
	return false, aeKnown
}

// hostMayConnect reports whether some allow-list entry could admit a peer at remote: true without
// an allow-list or when an entry allows any host. It is checked when the connection is accepted,
// before the TLS handshake and the A-ASSOCIATE-RQ.
func (p *Policy) hostMayConnect(remote net.Addr) bool {
	if len(p.Peers) == 0 {
		return true
	}
	var ip net.IP
	if tcp, ok := remote.(*net.TCPAddr); ok {
		ip = tcp.IP
	}
	for _, peer := range p.Peers {
		if len(peer.Hosts) == 0 {
			return true
		}
		for _, h := range peer.Hosts {
			if hostMatches(h, ip) {
				return true
			}
		}
	}
	return false
}

func hostMatches(pattern string, ip net.IP) bool {
	if ip == nil {
		return false
	}
	if strings.Contains(pattern, "/") {
		_, n, err := net.ParseCIDR(pattern)
		return err == nil && n.Contains(ip)
	}
	if p := net.ParseIP(pattern); p != nil {
		return p.Equal(ip)
	}
	// A host name: resolved now, so DNS changes apply without a restart.
	addrs, err := net.LookupIP(pattern)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if a.Equal(ip) {
			return true
		}
	}
	return false
}

func (p *Policy) abstractSyntaxAllowed(uid string) bool {
	for _, d := range p.DenySOPClasses {
		if d == uid {
			return false
		}
	}
	if uid == dimse.VerificationSOPClass || IsStorageSOPClass(uid) {
		return true
	}
	for _, a := range p.AllowSOPClasses {
		if a == uid {
			return true
		}
	}
	return false
}

// transferSyntaxes are the transfer syntaxes accepted for an abstract syntax, most preferred
// first: compressed ones only for storage (Verification and the like carry no pixel data).
func (p *Policy) transferSyntaxes(abstract string) []string {
	var ts []string
	for _, t := range DecodableTransferSyntaxes {
		if dicomio.IsCompressedTransferSyntax(t) && (p.NativeOnly || abstract == dimse.VerificationSOPClass) {
			continue
		}
		ts = append(ts, t)
	}
	if p.AcceptBigEndian {
		ts = append(ts, part10.ExplicitVRBigEndian)
	}
	return ts
}

// Validate checks the policy for obvious mistakes.
func (p *Policy) Validate() error {
	if len(p.AETitles) == 0 {
		return fmt.Errorf("gateway: no AE title configured")
	}
	for _, ae := range p.AETitles {
		if err := dicomstd.CheckAETitle(ae); err != nil {
			return fmt.Errorf("gateway: AE title %q: %w", ae, err)
		}
	}
	for _, peer := range p.Peers {
		if err := dicomstd.CheckAETitle(peer.AETitle); err != nil {
			return fmt.Errorf("gateway: peer AE title %q: %w", peer.AETitle, err)
		}
		for _, h := range peer.Hosts {
			if strings.Contains(h, "/") {
				if _, _, err := net.ParseCIDR(h); err != nil {
					return fmt.Errorf("gateway: peer %s: host %q: %w", peer.AETitle, h, err)
				}
			}
		}
	}
	return nil
}

// negotiate answers an A-ASSOCIATE-RQ: it rejects a wrong called AE (reason 7) or an unknown
// calling AE/host (reason 3), and otherwise accepts each presentation context whose abstract
// syntax is allowed with the first decodable transfer syntax in the sender's list.
func (p *Policy) negotiate(rq *pdu.AssociateRQ, remote net.Addr) ([]pdu.PresentationContextAC, *pdu.AssociateRJ, string, string) {
	if !p.calledAEAllowed(rq.CalledAE) {
		return nil, &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceServiceUser, Reason: pdu.RejectReasonCalledAENotRecognized}, "called AE title not served here", obs.RejectCalledAEUnknown
	}
	if ok, aeKnown := p.peerAllowed(rq.CallingAE, remote); !ok {
		// DICOM has no reject reason for a host: "calling AE title not recognized" is the one
		// peers understand; the log and the metric say which it was.
		rj := &pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceServiceUser, Reason: pdu.RejectReasonCallingAENotRecognized}
		if aeKnown {
			return nil, rj, "calling AE title allowed, but not from this host", obs.RejectHostNotAllowed
		}
		return nil, rj, "calling AE title not in the allow-list", obs.RejectCallingAENotAllowed
	}
	answers := make([]pdu.PresentationContextAC, 0, len(rq.PresentationContexts))
	for _, pc := range rq.PresentationContexts {
		ans := pdu.PresentationContextAC{ID: pc.ID}
		if !p.abstractSyntaxAllowed(pc.AbstractSyntax) {
			ans.Result = pdu.ResultAbstractSyntaxNotSupported
			answers = append(answers, ans)
			continue
		}
		ans.Result = pdu.ResultTransferSyntaxesNotSupported
		// The sender's order decides (as in pynetdicom): it lists first the syntax its images are
		// stored in, so accepting that one spares it a transcoding and keeps the data as it was.
		accepted := p.transferSyntaxes(pc.AbstractSyntax)
	pick:
		for _, offered := range pc.TransferSyntaxes {
			for _, ok := range accepted {
				if offered == ok {
					ans.Result, ans.TransferSyntax = pdu.ResultAcceptance, offered
					break pick
				}
			}
		}
		answers = append(answers, ans)
	}
	return answers, nil, "", ""
}
