package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/slotscaler/slotscaler/pkg/config"
	"github.com/slotscaler/slotscaler/pkg/redisconn"
	"github.com/slotscaler/slotscaler/pkg/slots"
)

// openStore connects to Redis and opens the slot store, giving start-up 30 s
// (every command of the scaler, the janitor and declare-pool starts so). The
// caller closes the connection.
func openStore(ctx context.Context, r config.Redis, log *slog.Logger) (*redisconn.Conn, *slots.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := redisconn.Open(ctx, r.RedisURL, log)
	if err != nil {
		return nil, nil, err
	}
	store, err := slots.New(ctx, conn.Client, r.StoreOptions(log))
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("opening slot store: %w", err)
	}
	return conn, store, nil
}
