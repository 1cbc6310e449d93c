//go:build !linux

package main

// harden is a no-op where /proc/<pid>/environ does not exist.
func harden() {}
