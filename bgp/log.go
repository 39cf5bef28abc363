package bgp

import (
	"log/slog"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// logAdapter sends GoBGP's logs to slog; GoBGP's info is chatty, so it
// becomes debug.
type logAdapter struct{ l *slog.Logger }

func args(f gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(f))
	for k, v := range f {
		out = append(out, k, v)
	}
	return out
}

func (a *logAdapter) Panic(msg string, f gobgplog.Fields) { a.l.Error("gobgp: "+msg, args(f)...) }
func (a *logAdapter) Fatal(msg string, f gobgplog.Fields) { a.l.Error("gobgp: "+msg, args(f)...) }
func (a *logAdapter) Error(msg string, f gobgplog.Fields) { a.l.Warn("gobgp: "+msg, args(f)...) }
func (a *logAdapter) Warn(msg string, f gobgplog.Fields)  { a.l.Debug("gobgp: "+msg, args(f)...) }
func (a *logAdapter) Info(msg string, f gobgplog.Fields)  { a.l.Debug("gobgp: "+msg, args(f)...) }
func (a *logAdapter) Debug(msg string, f gobgplog.Fields) {}
func (a *logAdapter) SetLevel(gobgplog.LogLevel)          {}
func (a *logAdapter) GetLevel() gobgplog.LogLevel         { return gobgplog.InfoLevel }
