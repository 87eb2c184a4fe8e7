package overlay

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// socketDrops is the kernel's count of datagrams it dropped for the
// socket (receive buffer full, bad checksum): the last column of
// /proc/net/udp and udp6, found by the socket's inode. ok is false when
// it cannot be read (no /proc, or not a plain UDP socket of ours).
func (s *bindSocket) socketDrops() (drops uint64, ok bool) {
	if s == nil || s.uc == nil {
		return 0, false
	}
	rc, err := s.uc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var st syscall.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil || serr != nil {
		return 0, false
	}
	inode := strconv.FormatUint(uint64(st.Ino), 10)
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		if d, found := procUDPDrops(f, inode); found {
			return d, true
		}
	}
	return 0, false
}

// procUDPDrops reads the drops of the socket with inode from one
// /proc/net/udp-format file.
func procUDPDrops(path, inode string) (uint64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
		fs := strings.Fields(sc.Text())
		if len(fs) < 13 || fs[9] != inode {
			continue
		}
		d, err := strconv.ParseUint(fs[12], 10, 64)
		return d, err == nil
	}
	return 0, false
}
