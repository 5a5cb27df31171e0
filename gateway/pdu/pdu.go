// Package pdu encodes and decodes the protocol data units of the DICOM upper layer (PS3.8 section
// 9.3): A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF, A-RELEASE-RQ/RP and A-ABORT. Every length read from the
// wire is checked against the enclosing length and a caller-given limit before anything is
// allocated, so a lying peer gets an error, never a large allocation.
package pdu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"dpersona/internal/dicomstd"
)

// PDU types (PS3.8 table 9-11 and following).
const (
	TypeAssociateRQ byte = 0x01
	TypeAssociateAC byte = 0x02
	TypeAssociateRJ byte = 0x03
	TypePDataTF     byte = 0x04
	TypeReleaseRQ   byte = 0x05
	TypeReleaseRP   byte = 0x06
	TypeAbort       byte = 0x07
)

// HeaderLen is the size of every PDU header: type, reserved, 4-byte big-endian length.
const HeaderLen = 6

// ApplicationContextName is the only application context DICOM defines.
const ApplicationContextName = "1.2.840.10008.3.1.1.1"

// Item types inside A-ASSOCIATE PDUs.
const (
	itemApplicationContext  byte = 0x10
	itemPresentationCtxRQ   byte = 0x20
	itemPresentationCtxAC   byte = 0x21
	itemAbstractSyntax      byte = 0x30
	itemTransferSyntax      byte = 0x40
	itemUserInformation     byte = 0x50
	subItemMaxLength        byte = 0x51
	subItemImplClassUID     byte = 0x52
	subItemImplVersionName  byte = 0x55
	maxImplVersionNameLenth      = 16
)

// Presentation context results in an A-ASSOCIATE-AC (PS3.8 table 9-18).
const (
	ResultAcceptance                   byte = 0
	ResultUserRejection                byte = 1
	ResultNoReason                     byte = 2
	ResultAbstractSyntaxNotSupported   byte = 3
	ResultTransferSyntaxesNotSupported byte = 4
)

// RejectResult, RejectSource and RejectReason are the fields of an A-ASSOCIATE-RJ (PS3.8 table
// 9-21); AbortSource and AbortReason those of an A-ABORT (table 9-26). Each is its own type, so a
// source cannot be passed where a reason is expected, nor an abort value where a reject value is.
type (
	RejectResult byte
	RejectSource byte
	RejectReason byte
	AbortSource  byte
	AbortReason  byte
)

// A-ASSOCIATE-RJ result, source and reason values (PS3.8 table 9-21).
const (
	RejectPermanent RejectResult = 1
	RejectTransient RejectResult = 2

	RejectSourceServiceUser                 RejectSource = 1
	RejectSourceServiceProviderACSE         RejectSource = 2
	RejectSourceServiceProviderPresentation RejectSource = 3

	// Reasons when the source is the service user.
	RejectReasonNoReason                       RejectReason = 1
	RejectReasonApplicationContextNotSupported RejectReason = 2
	RejectReasonCallingAENotRecognized         RejectReason = 3
	RejectReasonCalledAENotRecognized          RejectReason = 7
	// Reason when the source is the ACSE service provider.
	RejectReasonProtocolVersionNotSupported RejectReason = 2
	// Reasons when the source is the presentation service provider.
	RejectReasonTemporaryCongestion RejectReason = 1
	RejectReasonLocalLimitExceeded  RejectReason = 2
)

// A-ABORT sources and reasons (PS3.8 table 9-26). The reason is significant only when the source
// is the service provider; a service user sends AbortReasonNotSpecified.
const (
	AbortSourceServiceUser     AbortSource = 0
	AbortSourceServiceProvider AbortSource = 2

	AbortReasonNotSpecified          AbortReason = 0
	AbortReasonUnrecognizedPDU       AbortReason = 1
	AbortReasonUnexpectedPDU         AbortReason = 2
	AbortReasonUnrecognizedParameter AbortReason = 4
	AbortReasonUnexpectedParameter   AbortReason = 5
	AbortReasonInvalidParameterValue AbortReason = 6
)

func (s AbortSource) String() string {
	switch s {
	case AbortSourceServiceUser:
		return "service user"
	case 1:
		return "reserved"
	case AbortSourceServiceProvider:
		return "service provider"
	}
	return fmt.Sprintf("source %d", byte(s))
}

func (r AbortReason) String() string {
	switch r {
	case AbortReasonNotSpecified:
		return "reason not specified"
	case AbortReasonUnrecognizedPDU:
		return "unrecognized PDU"
	case AbortReasonUnexpectedPDU:
		return "unexpected PDU"
	case AbortReasonUnrecognizedParameter:
		return "unrecognized PDU parameter"
	case AbortReasonUnexpectedParameter:
		return "unexpected PDU parameter"
	case AbortReasonInvalidParameterValue:
		return "invalid PDU parameter value"
	}
	return fmt.Sprintf("reason %d", byte(r))
}

func (r RejectResult) String() string {
	switch r {
	case RejectPermanent:
		return "permanent"
	case RejectTransient:
		return "transient"
	}
	return fmt.Sprintf("result %d", byte(r))
}

// ErrMalformed wraps every decoding error, so callers can tell a broken peer from an I/O error.
var ErrMalformed = errors.New("malformed PDU")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Header is the fixed 6-byte start of every PDU.
type Header struct {
	Type   byte
	Length uint32 // length of the body that follows the header
}

// ReadHeader reads one PDU header.
func ReadHeader(r io.Reader) (Header, error) {
	var b [HeaderLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Header{}, err
	}
	return Header{Type: b[0], Length: binary.BigEndian.Uint32(b[2:])}, nil
}

// PutHeader writes a PDU header into b[:6].
func PutHeader(b []byte, typ byte, length uint32) {
	b[0], b[1] = typ, 0
	binary.BigEndian.PutUint32(b[2:6], length)
}

// PresentationContextRQ is one proposed presentation context.
type PresentationContextRQ struct {
	ID               byte
	AbstractSyntax   string
	TransferSyntaxes []string
}

// PresentationContextAC is the acceptor's answer for one proposed context.
type PresentationContextAC struct {
	ID             byte
	Result         byte
	TransferSyntax string // significant only when Result is ResultAcceptance
}

// UserInfo holds the user-information sub-items this implementation uses; others are skipped.
type UserInfo struct {
	MaxPDULength              uint32 // 0 = no limit
	ImplementationClassUID    string
	ImplementationVersionName string
}

// AssociateRQ is an A-ASSOCIATE-RQ PDU.
type AssociateRQ struct {
	ProtocolVersion      uint16
	CalledAE, CallingAE  string
	ApplicationContext   string
	PresentationContexts []PresentationContextRQ
	UserInfo             UserInfo
}

// AssociateAC is an A-ASSOCIATE-AC PDU.
type AssociateAC struct {
	ProtocolVersion      uint16
	CalledAE, CallingAE  string // echoed from the request
	ApplicationContext   string
	PresentationContexts []PresentationContextAC
	UserInfo             UserInfo
}

// AssociateRJ is an A-ASSOCIATE-RJ PDU.
type AssociateRJ struct {
	Result RejectResult
	Source RejectSource
	Reason RejectReason
}

// Abort is an A-ABORT PDU.
type Abort struct {
	Source AbortSource
	Reason AbortReason
}

// ReleaseRQ and ReleaseRP carry no parameters.
type (
	ReleaseRQ struct{}
	ReleaseRP struct{}
)

// PDV is one presentation data value of a P-DATA-TF.
type PDV struct {
	ContextID byte
	Command   bool // message control header bit 0: command (true) or data set
	Last      bool // bit 1: last fragment of the command or data set
	Data      []byte
}

// PDataTF is a whole P-DATA-TF; the streaming reader in package ul avoids materialising one.
type PDataTF struct {
	PDVs []PDV
}

// PDV message control header bits.
const (
	PDVCommand byte = 0x01
	PDVLast    byte = 0x02
)

func (rj AssociateRJ) Error() string {
	return fmt.Sprintf("%s, %s", rj.Result, RejectReasonText(rj.Source, rj.Reason))
}

// RejectReasonText names an A-ASSOCIATE-RJ source/reason pair.
func RejectReasonText(source RejectSource, reason RejectReason) string {
	switch source {
	case RejectSourceServiceUser:
		switch reason {
		case RejectReasonNoReason:
			return "service user: no reason given"
		case RejectReasonApplicationContextNotSupported:
			return "service user: application context name not supported"
		case RejectReasonCallingAENotRecognized:
			return "service user: calling AE title not recognized"
		case RejectReasonCalledAENotRecognized:
			return "service user: called AE title not recognized"
		}
	case RejectSourceServiceProviderACSE:
		switch reason {
		case RejectReasonNoReason:
			return "service provider (ACSE): no reason given"
		case RejectReasonProtocolVersionNotSupported:
			return "service provider (ACSE): protocol version not supported"
		}
	case RejectSourceServiceProviderPresentation:
		switch reason {
		case RejectReasonTemporaryCongestion:
			return "service provider (presentation): temporary congestion"
		case RejectReasonLocalLimitExceeded:
			return "service provider (presentation): local limit exceeded"
		}
	}
	return fmt.Sprintf("source %d reason %d", source, reason)
}

// Read reads one whole PDU and decodes it into one of *AssociateRQ, *AssociateAC, *AssociateRJ,
// *PDataTF, *ReleaseRQ, *ReleaseRP or *Abort. A body longer than maxLen is refused before it is
// read or allocated.
func Read(r io.Reader, maxLen uint32) (any, error) {
	h, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	if h.Length > maxLen {
		return nil, malformed("PDU type 0x%02x declares %d bytes, limit is %d", h.Type, h.Length, maxLen)
	}
	switch h.Type {
	case TypeAssociateRQ, TypeAssociateAC, TypeAssociateRJ, TypePDataTF, TypeReleaseRQ, TypeReleaseRP, TypeAbort:
	default:
		return nil, malformed("unknown PDU type 0x%02x", h.Type)
	}
	body := make([]byte, h.Length)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("PDU type 0x%02x body: %w", h.Type, err)
	}
	return Decode(h.Type, body)
}

// Decode decodes a PDU body of the given type.
func Decode(typ byte, body []byte) (any, error) {
	switch typ {
	case TypeAssociateRQ:
		return DecodeAssociateRQ(body)
	case TypeAssociateAC:
		return DecodeAssociateAC(body)
	case TypeAssociateRJ:
		if len(body) != 4 {
			return nil, malformed("A-ASSOCIATE-RJ body is %d bytes, want 4", len(body))
		}
		return &AssociateRJ{Result: RejectResult(body[1]), Source: RejectSource(body[2]), Reason: RejectReason(body[3])}, nil
	case TypePDataTF:
		return DecodePDataTF(body)
	case TypeReleaseRQ:
		if len(body) != 4 {
			return nil, malformed("A-RELEASE-RQ body is %d bytes, want 4", len(body))
		}
		return &ReleaseRQ{}, nil
	case TypeReleaseRP:
		if len(body) != 4 {
			return nil, malformed("A-RELEASE-RP body is %d bytes, want 4", len(body))
		}
		return &ReleaseRP{}, nil
	case TypeAbort:
		if len(body) != 4 {
			return nil, malformed("A-ABORT body is %d bytes, want 4", len(body))
		}
		return &Abort{Source: AbortSource(body[2]), Reason: AbortReason(body[3])}, nil
	}
	return nil, malformed("unknown PDU type 0x%02x", typ)
}

// DecodePDataTF splits a P-DATA-TF body into its PDVs (all of them, PS3.8 9.3.5.1).
func DecodePDataTF(body []byte) (*PDataTF, error) {
	p := &PDataTF{}
	for len(body) > 0 {
		if len(body) < 6 {
			return nil, malformed("P-DATA-TF: %d trailing bytes cannot hold a PDV header", len(body))
		}
		n := binary.BigEndian.Uint32(body)
		if n < 2 || uint64(n) > uint64(len(body)-4) {
			return nil, malformed("P-DATA-TF: PDV item length %d does not fit the %d bytes left", n, len(body)-4)
		}
		ctl := body[5]
		p.PDVs = append(p.PDVs, PDV{ContextID: body[4], Command: ctl&PDVCommand != 0, Last: ctl&PDVLast != 0, Data: body[6 : 4+n]})
		body = body[4+n:]
	}
	if len(p.PDVs) == 0 {
		return nil, malformed("P-DATA-TF without any PDV")
	}
	return p, nil
}

// Encode returns the whole P-DATA-TF PDU.
func (p *PDataTF) Encode() []byte {
	n := 0
	for _, v := range p.PDVs {
		n += 6 + len(v.Data)
	}
	b := make([]byte, HeaderLen, HeaderLen+n)
	PutHeader(b, TypePDataTF, uint32(n))
	for _, v := range p.PDVs {
		var h [6]byte
		binary.BigEndian.PutUint32(h[:], uint32(2+len(v.Data)))
		h[4] = v.ContextID
		if v.Command {
			h[5] |= PDVCommand
		}
		if v.Last {
			h[5] |= PDVLast
		}
		b = append(b, h[:]...)
		b = append(b, v.Data...)
	}
	return b
}

// Encode returns the whole PDU.
func (rj *AssociateRJ) Encode() []byte {
	b := make([]byte, HeaderLen+4)
	PutHeader(b, TypeAssociateRJ, 4)
	b[7], b[8], b[9] = byte(rj.Result), byte(rj.Source), byte(rj.Reason)
	return b
}

// Encode returns the whole PDU.
func (a *Abort) Encode() []byte {
	b := make([]byte, HeaderLen+4)
	PutHeader(b, TypeAbort, 4)
	b[8], b[9] = byte(a.Source), byte(a.Reason)
	return b
}

// Encode returns the whole PDU.
func (ReleaseRQ) Encode() []byte {
	b := make([]byte, HeaderLen+4)
	PutHeader(b, TypeReleaseRQ, 4)
	return b
}

// Encode returns the whole PDU.
func (ReleaseRP) Encode() []byte {
	b := make([]byte, HeaderLen+4)
	PutHeader(b, TypeReleaseRP, 4)
	return b
}

// aeField pads an AE title to the fixed 16-byte field.
func aeField(ae string) []byte {
	b := []byte("                ")
	copy(b, ae)
	return b
}

// TrimUID removes the NUL or space padding of a UID value.
func TrimUID(b []byte) string {
	return strings.TrimRight(string(b), " \x00")
}

func appendItem(b []byte, typ byte, value []byte) []byte {
	b = append(b, typ, 0, byte(len(value)>>8), byte(len(value)))
	return append(b, value...)
}

func encodeUserInfo(u UserInfo) []byte {
	var v []byte
	var ml [4]byte
	binary.BigEndian.PutUint32(ml[:], u.MaxPDULength)
	v = appendItem(v, subItemMaxLength, ml[:])
	if u.ImplementationClassUID != "" {
		v = appendItem(v, subItemImplClassUID, []byte(u.ImplementationClassUID))
	}
	if u.ImplementationVersionName != "" {
		v = appendItem(v, subItemImplVersionName, []byte(u.ImplementationVersionName))
	}
	return appendItem(nil, itemUserInformation, v)
}

func encodeAssociate(typ byte, version uint16, called, calling, appCtx string, contexts []byte, ui UserInfo) []byte {
	b := make([]byte, HeaderLen, 256+len(contexts))
	b = append(b, byte(version>>8), byte(version), 0, 0)
	b = append(b, aeField(called)...)
	b = append(b, aeField(calling)...)
	b = append(b, make([]byte, 32)...)
	if appCtx == "" {
		appCtx = ApplicationContextName
	}
	b = appendItem(b, itemApplicationContext, []byte(appCtx))
	b = append(b, contexts...)
	b = append(b, encodeUserInfo(ui)...)
	PutHeader(b, typ, uint32(len(b)-HeaderLen))
	return b
}

// Encode returns the whole PDU.
func (rq *AssociateRQ) Encode() []byte {
	var ctx []byte
	for _, pc := range rq.PresentationContexts {
		v := []byte{pc.ID, 0, 0, 0}
		v = appendItem(v, itemAbstractSyntax, []byte(pc.AbstractSyntax))
		for _, ts := range pc.TransferSyntaxes {
			v = appendItem(v, itemTransferSyntax, []byte(ts))
		}
		ctx = appendItem(ctx, itemPresentationCtxRQ, v)
	}
	v := rq.ProtocolVersion
	if v == 0 {
		v = 1
	}
	return encodeAssociate(TypeAssociateRQ, v, rq.CalledAE, rq.CallingAE, rq.ApplicationContext, ctx, rq.UserInfo)
}

// Encode returns the whole PDU.
func (ac *AssociateAC) Encode() []byte {
	var ctx []byte
	for _, pc := range ac.PresentationContexts {
		v := []byte{pc.ID, 0, pc.Result, 0}
		ts := pc.TransferSyntax
		if ts == "" {
			// The sub-item must be present even when the context is rejected (its value is then
			// not significant); "implicit VR little endian" is what other acceptors send.
			ts = dicomstd.ImplicitVRLittleEndian
		}
		v = appendItem(v, itemTransferSyntax, []byte(ts))
		ctx = appendItem(ctx, itemPresentationCtxAC, v)
	}
	v := ac.ProtocolVersion
	if v == 0 {
		v = 1
	}
	return encodeAssociate(TypeAssociateAC, v, ac.CalledAE, ac.CallingAE, ac.ApplicationContext, ctx, ac.UserInfo)
}

// item is one variable item: type and value.
type item struct {
	typ   byte
	value []byte
}

// splitItems walks a sequence of items (type, reserved, 2-byte length, value).
func splitItems(b []byte, where string) ([]item, error) {
	var items []item
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, malformed("%s: %d trailing bytes cannot hold an item header", where, len(b))
		}
		n := int(binary.BigEndian.Uint16(b[2:4]))
		if n > len(b)-4 {
			return nil, malformed("%s: item 0x%02x declares %d bytes, only %d left", where, b[0], n, len(b)-4)
		}
		items = append(items, item{typ: b[0], value: b[4 : 4+n]})
		b = b[4+n:]
	}
	return items, nil
}

// checkUID bounds a UID item by length only: the upper layer compares the UIDs a peer proposes
// with the ones it knows and never uses them as names, so a cosmetic fault (a leading zero) is no
// reason to refuse an association. dicomstd.ValidUID is the strict check where it matters.
func checkUID(v []byte, what string) (string, error) {
	s := TrimUID(v)
	if len(s) == 0 || len(s) > dicomstd.MaxUIDLength {
		return "", malformed("%s UID has length %d (1..64 allowed)", what, len(s))
	}
	return s, nil
}

type associateFixed struct {
	version         uint16
	called, calling string
	items           []item
}

func decodeAssociateFixed(body []byte, what string) (associateFixed, error) {
	if len(body) < 68 {
		return associateFixed{}, malformed("%s body is %d bytes, shorter than its 68-byte fixed part", what, len(body))
	}
	items, err := splitItems(body[68:], what)
	if err != nil {
		return associateFixed{}, err
	}
	return associateFixed{
		version: binary.BigEndian.Uint16(body[0:2]),
		called:  dicomstd.TrimAETitle(string(body[4:20])),
		calling: dicomstd.TrimAETitle(string(body[20:36])),
		items:   items,
	}, nil
}

func decodeUserInfo(v []byte) (UserInfo, error) {
	var u UserInfo
	subs, err := splitItems(v, "user information")
	if err != nil {
		return u, err
	}
	for _, s := range subs {
		switch s.typ {
		case subItemMaxLength:
			if len(s.value) != 4 {
				return u, malformed("maximum length sub-item is %d bytes, want 4", len(s.value))
			}
			u.MaxPDULength = binary.BigEndian.Uint32(s.value)
		case subItemImplClassUID:
			if u.ImplementationClassUID, err = checkUID(s.value, "implementation class"); err != nil {
				return u, err
			}
		case subItemImplVersionName:
			// Cut an over-long name to its 16 characters before trimming its padding, so that
			// padding inside the cut is trimmed too and decoding is stable under re-encoding.
			name := s.value
			if len(name) > maxImplVersionNameLenth {
				name = name[:maxImplVersionNameLenth]
			}
			u.ImplementationVersionName = strings.Trim(string(name), " \x00") // SH: padding is not significant
		}
		// Other sub-items (asynchronous operations, role selection, extended negotiation, user
		// identity) are optional to honour; skipping them means the defaults apply.
	}
	return u, nil
}

// DecodeAssociateRQ decodes an A-ASSOCIATE-RQ body.
func DecodeAssociateRQ(body []byte) (*AssociateRQ, error) {
	f, err := decodeAssociateFixed(body, "A-ASSOCIATE-RQ")
	if err != nil {
		return nil, err
	}
	rq := &AssociateRQ{ProtocolVersion: f.version, CalledAE: f.called, CallingAE: f.calling}
	seenUser := false
	for _, it := range f.items {
		switch it.typ {
		case itemApplicationContext:
			if rq.ApplicationContext, err = checkUID(it.value, "application context"); err != nil {
				return nil, err
			}
		case itemPresentationCtxRQ:
			if len(it.value) < 4 {
				return nil, malformed("presentation context item is %d bytes", len(it.value))
			}
			pc := PresentationContextRQ{ID: it.value[0]}
			subs, err := splitItems(it.value[4:], "presentation context")
			if err != nil {
				return nil, err
			}
			for _, s := range subs {
				switch s.typ {
				case itemAbstractSyntax:
					if pc.AbstractSyntax != "" {
						return nil, malformed("presentation context %d has two abstract syntaxes", pc.ID)
					}
					if pc.AbstractSyntax, err = checkUID(s.value, "abstract syntax"); err != nil {
						return nil, err
					}
				case itemTransferSyntax:
					ts, err := checkUID(s.value, "transfer syntax")
					if err != nil {
						return nil, err
					}
					pc.TransferSyntaxes = append(pc.TransferSyntaxes, ts)
				default:
					return nil, malformed("presentation context %d: unexpected sub-item 0x%02x", pc.ID, s.typ)
				}
			}
			if pc.AbstractSyntax == "" || len(pc.TransferSyntaxes) == 0 {
				return nil, malformed("presentation context %d lacks an abstract or transfer syntax", pc.ID)
			}
			rq.PresentationContexts = append(rq.PresentationContexts, pc)
		case itemUserInformation:
			if rq.UserInfo, err = decodeUserInfo(it.value); err != nil {
				return nil, err
			}
			seenUser = true
		default:
			return nil, malformed("A-ASSOCIATE-RQ: unexpected item 0x%02x", it.typ)
		}
	}
	if rq.ApplicationContext == "" {
		return nil, malformed("A-ASSOCIATE-RQ without application context")
	}
	if len(rq.PresentationContexts) == 0 {
		return nil, malformed("A-ASSOCIATE-RQ without presentation contexts")
	}
	if !seenUser {
		return nil, malformed("A-ASSOCIATE-RQ without user information (maximum length is mandatory)")
	}
	return rq, nil
}

// DecodeAssociateAC decodes an A-ASSOCIATE-AC body.
func DecodeAssociateAC(body []byte) (*AssociateAC, error) {
	f, err := decodeAssociateFixed(body, "A-ASSOCIATE-AC")
	if err != nil {
		return nil, err
	}
	ac := &AssociateAC{ProtocolVersion: f.version, CalledAE: f.called, CallingAE: f.calling}
	seenUser := false
	for _, it := range f.items {
		switch it.typ {
		case itemApplicationContext:
			if ac.ApplicationContext, err = checkUID(it.value, "application context"); err != nil {
				return nil, err
			}
		case itemPresentationCtxAC:
			if len(it.value) < 4 {
				return nil, malformed("presentation context item is %d bytes", len(it.value))
			}
			pc := PresentationContextAC{ID: it.value[0], Result: it.value[2]}
			subs, err := splitItems(it.value[4:], "presentation context")
			if err != nil {
				return nil, err
			}
			for _, s := range subs {
				if s.typ == itemTransferSyntax {
					pc.TransferSyntax = TrimUID(s.value)
				}
			}
			if pc.Result == ResultAcceptance {
				if pc.TransferSyntax, err = checkUID([]byte(pc.TransferSyntax), "accepted transfer syntax"); err != nil {
					return nil, err
				}
			}
			ac.PresentationContexts = append(ac.PresentationContexts, pc)
		case itemUserInformation:
			if ac.UserInfo, err = decodeUserInfo(it.value); err != nil {
				return nil, err
			}
			seenUser = true
		default:
			return nil, malformed("A-ASSOCIATE-AC: unexpected item 0x%02x", it.typ)
		}
	}
	if ac.ApplicationContext == "" {
		return nil, malformed("A-ASSOCIATE-AC without application context")
	}
	if !seenUser {
		return nil, malformed("A-ASSOCIATE-AC without user information (maximum length is mandatory)")
	}
	return ac, nil
}
