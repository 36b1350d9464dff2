package ami_test

import (
	"fmt"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/event"
)

func ExampleSecurityEvent() {
	m, _ := ami.ParseMessage([]byte("Event: InvalidPassword\r\nPrivilege: security,all\r\n" +
		"EventTV: 2026-11-25T04:02:52.620+0000\r\nSeverity: Error\r\nService: AMI\r\n" +
		"AccountID: monitor\r\nRemoteAddress: IPV4/TCP/203.0.113.222/34130\r\n"))
	var ev event.Event
	if ami.SecurityEvent(m, &ev) {
		fmt.Println(ev.Time.Format("15:04:05.000"), ev.Service, ev.Kind, ev.Addr, ev.Port, ev.Account)
	}
	// Output: 04:02:52.620 ami auth_failure 203.0.113.222 34130 monitor
}
