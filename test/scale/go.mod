module github.com/slotscaler/slotscaler/test/scale

go 1.26.0

replace github.com/slotscaler/slotscaler => ../..

require (
	github.com/kedacore/keda/v2 v2.20.2
	github.com/redis/go-redis/v9 v9.23.0
	github.com/slotscaler/slotscaler v0.0.0-00010101000000-000000000000
	golang.org/x/sync v0.25.0
	google.golang.org/grpc v1.85.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260904194346-d0f1323225a4 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
