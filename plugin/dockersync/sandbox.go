package dockersync

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// SandboxPaths returns where a Docker sandbox key (EXECROOT/netns/ID) can be
// opened from the daemon: the key itself; in the managed plugin, the same
// file under the mount of Docker's exec root (execMount/netns/ID); and the
// key through dockerd's root (/proc/PID/root/KEY), for a dockerd in a mount
// namespace of its own (its namespace files are mounts only it sees).
// dockerd's PID is the Docker socket's peer, read at each call, since
// dockerd may have restarted: one connect, no API request.
func SandboxPaths(dockerHost, execMount string) func(string) []string {
	return func(key string) []string {
		paths := []string{key}
		if execMount != "" {
			paths = append(paths, filepath.Join(execMount, "netns", filepath.Base(key)))
		}
		if pid, err := dockerdPID(dockerHost); err == nil && pid > 0 {
			paths = append(paths, fmt.Sprintf("/proc/%d/root%s", pid, key))
		}
		return paths
	}
}

// dockerdPID is the PID of the process serving the Docker API socket.
func dockerdPID(dockerHost string) (int, error) {
	path, ok := strings.CutPrefix(dockerHost, "unix://")
	if !ok {
		return 0, fmt.Errorf("--docker-host %s is not a unix socket", dockerHost)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return int(cred.Pid), nil
}
