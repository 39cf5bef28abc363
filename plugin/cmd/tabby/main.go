// Command tabby is the tabby daemon and CLI.
package main

import (
	"context"
	"fmt"
	"os"
	"runtime"

	"github.com/tabbynet/tabby/plugin/cli"
)

func main() {
	// Nothing reads tabby's heap profiles; sampling for them keeps a table
	// and a record per sampled call stack for the life of the daemon.
	runtime.MemProfileRate = 0
	cmd := cli.New(os.Stdout, os.Stderr, os.Getenv)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "tabby:", err)
		os.Exit(1)
	}
}
