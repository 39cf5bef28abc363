// Command tabby is the tabby daemon and CLI.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/tabbynet/tabby/plugin"
)

func main() {
	cmd := plugin.NewCLI(os.Stdout, os.Stderr, os.Getenv)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "tabby:", err)
		os.Exit(1)
	}
}
