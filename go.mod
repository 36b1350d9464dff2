module github.com/pbxguard/pbxguard

go 1.26

require (
	github.com/nyaruka/phonenumbers v1.8.1
	github.com/phuslu/iploc v1.0.20260915
	github.com/spf13/cobra v1.10.2
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	golang.org/x/text v0.23.0 // indirect
	google.golang.org/protobuf v1.36.11 // indirect
)
