package calls

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
)

// CEL custom CSV columns of the legacy mapping in cel_custom.conf.sample
// (the one the corpus PBX uses):
//
//	eventtype,eventtime,CALLERID(name),CALLERID(num),ANI,RDNIS,DNID,exten,context,channame,appname,appdata,amaflags,accountcode,uniqueid,linkedid,BRIDGEPEER,userfield,userdeftype,eventextra
const (
	celEventType = iota
	celEventTime
	celCIDName
	celCIDNum
	celANI
	celRDNIS
	celDNID
	celExten
	celContext
	celChannel
	celAppName
	celAppData
	celAMAFlags
	celAccountCode
	celUniqueID
	celLinkedID
	celBridgePeer
	celUserField
	celUserDefType
	celEventExtra
	celFields // the legacy mapping writes exactly this many
)

// CELMessage turns one CEL custom CSV record (legacy mapping) into the AMI
// event the tracker understands, so that CEL — written at each call event,
// not at hang-up like a CDR — can stand in for AMI when there is no
// manager connection: CHAN_START becomes Newchannel, ANSWER Newstate Up,
// CHAN_END Hangup. It returns the event's time; ok=false for other events
// and for channels that are not an endpoint's (Local/…).
//
// The record must have the mapping's 20 fields and, for the three events
// used, a channel that is an endpoint's (EndpointChannel) and a uniqueid
// and linkedid without control bytes; anything else is an error, so a
// caller-ID name or a dialled number (caller text) can never become the
// channel a call is attributed to.
func CELMessage(rec []string) (m *ami.Message, at time.Time, ok bool, err error) {
	if len(rec) != celFields {
		return nil, time.Time{}, false, fmt.Errorf("cel: %d fields, want %d (the legacy cel_custom mapping: eventtype,eventtime,…,uniqueid,linkedid,BRIDGEPEER,userfield,userdeftype,eventextra)", len(rec), celFields)
	}
	sec, frac, _ := strings.Cut(rec[celEventTime], ".")
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || s < 946684800 {
		return nil, time.Time{}, false, fmt.Errorf("cel: eventtime %q is not epoch seconds (set eventtime to ${eventtime} in cel_custom.conf)", rec[celEventTime])
	}
	at = time.Unix(s, 0).UTC()
	if len(frac) == 6 {
		if us, err := strconv.Atoi(frac); err == nil {
			at = at.Add(time.Duration(us) * time.Microsecond)
		}
	}
	h := func(kv ...string) *ami.Message {
		msg := &ami.Message{Headers: make([]ami.Header, 0, len(kv)/2)}
		for i := 0; i+1 < len(kv); i += 2 {
			msg.Headers = append(msg.Headers, ami.Header{Key: kv[i], Value: kv[i+1]})
		}
		return msg
	}
	uid, lid, ch := rec[celUniqueID], rec[celLinkedID], rec[celChannel]
	switch rec[celEventType] {
	case "CHAN_START", "ANSWER", "CHAN_END":
		_, _, isEndpoint, other := EndpointChannel(ch)
		if other {
			return nil, at, false, nil
		}
		if !isEndpoint {
			return nil, time.Time{}, false, fmt.Errorf("cel: channel %q is not an endpoint's channel (PJSIP/<endpoint>-<8 hex>, SIP/…, IAX2/<endpoint>-<n>): not attributed", ch)
		}
		if uid == "" || !plain(uid) || !plain(lid) || len(uid) > 150 || len(lid) > 150 {
			return nil, time.Time{}, false, fmt.Errorf("cel: uniqueid %q or linkedid %q is not one Asterisk writes", uid, lid)
		}
	default:
		return nil, at, false, nil
	}
	switch rec[celEventType] {
	case "CHAN_START":
		return h("Event", "Newchannel", "Channel", ch, "CallerIDNum", rec[celCIDNum], "Context", rec[celContext],
			"Exten", rec[celExten], "Uniqueid", uid, "Linkedid", lid), at, true, nil
	case "ANSWER":
		return h("Event", "Newstate", "Channel", ch, "ChannelState", "6", "Uniqueid", uid, "Linkedid", lid), at, true, nil
	case "CHAN_END":
		return h("Event", "Hangup", "Channel", ch, "Uniqueid", uid, "Linkedid", lid), at, true, nil
	}
	return nil, at, false, nil
}
