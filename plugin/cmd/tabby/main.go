// Command tabby is the tabby daemon and CLI.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/tabbynet/tabby/plugin/cli"
)

func main() {
	cmd := cli.New(os.Stdout, os.Stderr, os.Getenv)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "tabby:", err)
		os.Exit(1)
	}
}
