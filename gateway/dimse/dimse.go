// Package dimse encodes and decodes DIMSE command sets (PS3.7 section 9 and annex E). Command
// sets are always implicit VR little endian, group 0000, preceded by their group length.
package dimse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Command fields (PS3.7 table E.1-1).
const (
	CStoreRQ  uint16 = 0x0001
	CStoreRSP uint16 = 0x8001
	CEchoRQ   uint16 = 0x0030
	CEchoRSP  uint16 = 0x8030
)

// CommandDataSetType values: 0x0101 means no data set follows; anything else means one does.
const (
	NoDataSet      uint16 = 0x0101
	DataSetPresent uint16 = 0x0000
)

// VerificationSOPClass is the abstract syntax of C-ECHO.
const VerificationSOPClass = "1.2.840.10008.1.1"

// Command element tags (group 0000).
const (
	tagGroupLength               uint16 = 0x0000
	tagAffectedSOPClassUID       uint16 = 0x0002
	tagCommandField              uint16 = 0x0100
	tagMessageID                 uint16 = 0x0110
	tagMessageIDBeingRespondedTo uint16 = 0x0120
	tagMoveOriginatorAE          uint16 = 0x1030
	tagMoveOriginatorMessageID   uint16 = 0x1031
	tagPriority                  uint16 = 0x0700
	tagCommandDataSetType        uint16 = 0x0800
	tagStatus                    uint16 = 0x0900
	tagErrorComment              uint16 = 0x0902
	tagAffectedSOPInstanceUID    uint16 = 0x1000
	maxCommandElementValue              = 1024
)

// ErrMalformed wraps every decoding error.
var ErrMalformed = errors.New("malformed DIMSE command")

// Command is a decoded command set. Only the attributes the C-ECHO and C-STORE services use are
// kept; unknown elements are skipped.
type Command struct {
	CommandField              uint16
	MessageID                 uint16
	MessageIDBeingRespondedTo uint16
	AffectedSOPClassUID       string
	AffectedSOPInstanceUID    string
	Priority                  uint16
	CommandDataSetType        uint16
	Status                    Status
	ErrorComment              string
	MoveOriginatorAE          string
	MoveOriginatorMessageID   uint16

	present map[uint16]bool
}

// HasDataSet reports whether a data set follows this command.
func (c *Command) HasDataSet() bool { return c.CommandDataSetType != NoDataSet }

// Has reports whether the decoded command carried the element (0000,elem).
func (c *Command) Has(elem uint16) bool { return c.present[elem] }

// IsResponse reports whether the command field is a response.
func (c *Command) IsResponse() bool { return c.CommandField&0x8000 != 0 }

func (c *Command) String() string {
	return fmt.Sprintf("command 0x%04x msg %d class %s instance %s status 0x%04x", c.CommandField, c.MessageID, c.AffectedSOPClassUID, c.AffectedSOPInstanceUID, c.Status)
}

type element struct {
	tag   uint16
	value []byte
}

func uidValue(s string) []byte {
	b := []byte(s)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	return b
}

func textValue(s string) []byte {
	b := []byte(s)
	if len(b)%2 == 1 {
		b = append(b, ' ')
	}
	return b
}

func us(v uint16) []byte { return []byte{byte(v), byte(v >> 8)} }

// Encode returns the command set with its group length. CommandDataSetType is written as set,
// so set it to NoDataSet for commands without a data set. Which elements are written follows the
// command field: requests carry MessageID and Priority (C-STORE), responses carry
// MessageIDBeingRespondedTo and Status.
func (c *Command) Encode() []byte {
	els := []element{{tagCommandField, us(c.CommandField)}}
	if c.AffectedSOPClassUID != "" {
		els = append(els, element{tagAffectedSOPClassUID, uidValue(c.AffectedSOPClassUID)})
	}
	if c.IsResponse() {
		els = append(els, element{tagMessageIDBeingRespondedTo, us(c.MessageIDBeingRespondedTo)})
		els = append(els, element{tagStatus, us(uint16(c.Status))})
		if c.ErrorComment != "" {
			comment := c.ErrorComment
			if len(comment) > 64 {
				comment = comment[:64]
			}
			els = append(els, element{tagErrorComment, textValue(comment)})
		}
	} else {
		els = append(els, element{tagMessageID, us(c.MessageID)})
		if c.CommandField == CStoreRQ {
			els = append(els, element{tagPriority, us(c.Priority)})
		}
		if c.MoveOriginatorAE != "" {
			els = append(els, element{tagMoveOriginatorAE, textValue(c.MoveOriginatorAE)})
			els = append(els, element{tagMoveOriginatorMessageID, us(c.MoveOriginatorMessageID)})
		}
	}
	dst := c.CommandDataSetType // written as given: 0x0000 means a data set follows
	els = append(els, element{tagCommandDataSetType, us(dst)})
	if c.AffectedSOPInstanceUID != "" {
		els = append(els, element{tagAffectedSOPInstanceUID, uidValue(c.AffectedSOPInstanceUID)})
	}
	sort.Slice(els, func(i, j int) bool { return els[i].tag < els[j].tag })
	n := 0
	for _, e := range els {
		n += 8 + len(e.value)
	}
	b := make([]byte, 0, 12+n)
	b = appendElement(b, tagGroupLength, binary.LittleEndian.AppendUint32(nil, uint32(n)))
	for _, e := range els {
		b = appendElement(b, e.tag, e.value)
	}
	return b
}

func appendElement(b []byte, elem uint16, value []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, 0x0000)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(value)))
	return append(b, value...)
}

// Decode parses a command set. It insists on group 0000, lengths that fit, and the presence of
// CommandField and CommandDataSetType.
func Decode(b []byte) (*Command, error) {
	c := &Command{present: map[uint16]bool{}}
	for len(b) > 0 {
		if len(b) < 8 {
			return nil, fmt.Errorf("%w: %d trailing bytes cannot hold an element header", ErrMalformed, len(b))
		}
		group := binary.LittleEndian.Uint16(b[0:])
		elem := binary.LittleEndian.Uint16(b[2:])
		n := binary.LittleEndian.Uint32(b[4:])
		if group != 0x0000 {
			return nil, fmt.Errorf("%w: element (%04x,%04x) outside the command group", ErrMalformed, group, elem)
		}
		if uint64(n) > uint64(len(b)-8) {
			return nil, fmt.Errorf("%w: element (0000,%04x) declares %d bytes, only %d left", ErrMalformed, elem, n, len(b)-8)
		}
		v := b[8 : 8+n]
		b = b[8+n:]
		c.present[elem] = true
		switch elem {
		case tagCommandField, tagMessageID, tagMessageIDBeingRespondedTo, tagPriority, tagCommandDataSetType, tagStatus, tagMoveOriginatorMessageID:
			if len(v) != 2 {
				return nil, fmt.Errorf("%w: element (0000,%04x) is %d bytes, want 2 (US)", ErrMalformed, elem, len(v))
			}
			x := binary.LittleEndian.Uint16(v)
			switch elem {
			case tagCommandField:
				c.CommandField = x
			case tagMessageID:
				c.MessageID = x
			case tagMessageIDBeingRespondedTo:
				c.MessageIDBeingRespondedTo = x
			case tagPriority:
				c.Priority = x
			case tagCommandDataSetType:
				c.CommandDataSetType = x
			case tagStatus:
				c.Status = Status(x)
			case tagMoveOriginatorMessageID:
				c.MoveOriginatorMessageID = x
			}
		case tagAffectedSOPClassUID, tagAffectedSOPInstanceUID:
			// Kept even when longer than a UID may be (64): the command is well-formed, only its
			// value is wrong, which the service answers with a failure status rather than an
			// A-ABORT of the whole association.
			if len(v) > maxCommandElementValue {
				return nil, fmt.Errorf("%w: UID element (0000,%04x) is %d bytes", ErrMalformed, elem, len(v))
			}
			s := strings.TrimRight(string(v), "\x00 ")
			if elem == tagAffectedSOPClassUID {
				c.AffectedSOPClassUID = s
			} else {
				c.AffectedSOPInstanceUID = s
			}
		case tagErrorComment, tagMoveOriginatorAE:
			if len(v) > maxCommandElementValue {
				return nil, fmt.Errorf("%w: element (0000,%04x) is %d bytes", ErrMalformed, elem, len(v))
			}
			s := strings.Trim(string(v), "\x00 ")
			if elem == tagErrorComment {
				c.ErrorComment = s
			} else {
				c.MoveOriginatorAE = s
			}
		}
	}
	if !c.present[tagCommandField] {
		return nil, fmt.Errorf("%w: no CommandField (0000,0100)", ErrMalformed)
	}
	if !c.present[tagCommandDataSetType] {
		return nil, fmt.Errorf("%w: no CommandDataSetType (0000,0800)", ErrMalformed)
	}
	return c, nil
}
