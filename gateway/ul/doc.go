// Package ul is the DICOM upper layer (PS3.8) over TCP: association establishment for both the
// acceptor (SCP) and the requestor (SCU), P-DATA transfer with fragmentation on send and streaming
// reassembly on receive (every PDV of every P-DATA-TF), release and abort. Every wait on the
// network carries a deadline: the ARTIM timer while establishing or releasing, a read timeout
// inside a message, an idle timeout between messages.
//
// # State machine
//
// The package keeps no explicit state variable: each state of the PS3.8 state machine (table
// 9-10) is a place in the code, and a PDU that the state does not expect ends the association
// there. The mapping, tested state by state in phases_test.go:
//
//	PS3.8 state                              here
//	Sta1  idle                               no Association value
//	Sta2  transport open, awaiting RQ        Accept, reading the first PDU (RequestTimeout or ARTIM)
//	Sta3  awaiting local A-ASSOCIATE resp.   Accept, inside the Negotiator
//	Sta4  awaiting transport connection      the caller's net.Dial, before Request
//	Sta5  awaiting A-ASSOCIATE-AC or -RJ     Request, reading the answer (ARTIM)
//	Sta6  association established            ReadCommand, DataReader, WriteCommand, WriteData
//	Sta7  awaiting A-RELEASE-RP              Release (requestor)
//	Sta8  awaiting local A-RELEASE response  between ReadCommand's ErrReleaseRequested and ReplyRelease
//	Sta9-12  release collision               Release answers a peer's A-RELEASE-RQ with an RP and keeps
//	                                         waiting for its own RP (requestor side of 9.2.3.2)
//	Sta13 awaiting transport close           Close: the connection is closed at once (no ARTIM wait)
//
// What each state does with each PDU (source and reason of the A-ABORT sent, if any):
//
//	PDU received          Sta2 (Accept)        Sta5 (Request)       Sta6 (established)     Sta7 (Release)
//	A-ASSOCIATE-RQ        negotiate            abort user/2         abort provider/2       close, ErrProtocol
//	A-ASSOCIATE-AC        abort provider/2     establish            abort provider/2       close, ErrProtocol
//	A-ASSOCIATE-RJ        abort provider/2     close, ErrRejected   abort provider/2       close, ErrProtocol
//	P-DATA-TF             abort provider/2     abort user/2         deliver                skip (late data)
//	A-RELEASE-RQ          abort provider/2     abort user/2         ErrReleaseRequested    answer RP (collision)
//	A-RELEASE-RP          abort provider/2     abort user/2         abort provider/2       close, nil
//	A-ABORT               abort provider/2     close, ErrPeerAborted  close, ErrPeerAborted close, ErrPeerAborted
//	unrecognized type     abort provider/2     abort user/2         abort provider/1       close, ErrProtocol
//
// Reasons: 1 unrecognized PDU, 2 unexpected PDU, 6 invalid parameter value (a malformed RQ or AC,
// an AC accepting a transfer syntax that was not proposed, a PDV on a context that was not
// accepted or longer than its PDU, reserved control bits, a P-DATA-TF over the advertised
// maximum, a command set over MaxCommandLength). Inside a message, a data fragment where a
// command is expected, a command fragment inside a data set or an A-RELEASE-RQ between fragments
// is an unexpected PDU (2).
//
// Where this differs from PS3.8 tables 9-9 and 9-10 (kept as is: the peer sees an abort either
// way, and the reason says what was wrong): in Sta2 the acceptor aborts with source
// service-provider and a reason where AA-1 sends source service-user, and it answers an A-ABORT
// with one (AA-2 closes silently); in Sta5 the requestor aborts with source service-user where
// AA-8 names the service provider; in Sta7 an unexpected PDU closes the connection without the
// A-ABORT that AA-8 sends.
package ul
