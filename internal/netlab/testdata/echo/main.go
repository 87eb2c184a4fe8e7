// Command echo is netlab's test helper: a TCP/UDP server that tells each
// client the address it sees, and the matching client (there is no nc in the
// lab images).
//
//	echo serve [-tcp ADDR] [-udp ADDR]             prints "listening tcp|udp ADDR" when ready
//	echo dial [-udp] [-lport N] [-timeout D] ADDR... prints "ADDR seen REMOTE" per address; exit 1 on failure
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: echo serve|dial ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "dial":
		if err := dial(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "echo dial:", err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: echo serve|dial ...")
		os.Exit(2)
	}
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	tcpAddr := fs.String("tcp", "", "TCP listen address")
	udpAddr := fs.String("udp", "", "UDP listen address")
	_ = fs.Parse(args)
	if *tcpAddr == "" && *udpAddr == "" {
		fmt.Fprintln(os.Stderr, "serve: need -tcp and/or -udp")
		os.Exit(2)
	}
	if *tcpAddr != "" {
		ln, err := net.Listen("tcp", *tcpAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("listening tcp %s\n", ln.Addr())
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(10 * time.Second))
					_, _ = bufio.NewReader(c).ReadString('\n')
					fmt.Fprintf(c, "seen %s\n", c.RemoteAddr())
					fmt.Printf("tcp from %s\n", c.RemoteAddr())
				}()
			}
		}()
	}
	if *udpAddr != "" {
		pc, err := net.ListenPacket("udp", *udpAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("listening udp %s\n", pc.LocalAddr())
		go func() {
			buf := make([]byte, 2048)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo([]byte("seen "+from.String()), from)
				fmt.Printf("udp from %s\n", from)
			}
		}()
	}
	select {}
}

func dial(args []string) error {
	fs := flag.NewFlagSet("dial", flag.ExitOnError)
	udp := fs.Bool("udp", false, "use UDP (default TCP)")
	lport := fs.Int("lport", 0, "UDP: local port (one socket for all addresses)")
	timeout := fs.Duration("timeout", 2*time.Second, "per-address timeout")
	_ = fs.Parse(args)
	if fs.NArg() == 0 {
		return fmt.Errorf("no address")
	}
	if *udp {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{Port: *lport})
		if err != nil {
			return err
		}
		defer pc.Close()
		buf := make([]byte, 2048)
		for _, a := range fs.Args() {
			ua, err := net.ResolveUDPAddr("udp", a)
			if err != nil {
				return err
			}
			deadline := time.Now().Add(*timeout)
			got := ""
			for got == "" && time.Now().Before(deadline) {
				if _, err := pc.WriteToUDP([]byte("hello"), ua); err != nil {
					return err
				}
				_ = pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				n, from, err := pc.ReadFromUDP(buf)
				if err != nil {
					continue
				}
				if from.String() == ua.String() {
					got = string(buf[:n])
				}
			}
			if got == "" {
				return fmt.Errorf("udp %s: no answer within %v", a, *timeout)
			}
			fmt.Printf("%s %s\n", a, got)
		}
		return nil
	}
	for _, a := range fs.Args() {
		c, err := net.DialTimeout("tcp", a, *timeout)
		if err != nil {
			return err
		}
		_ = c.SetDeadline(time.Now().Add(*timeout))
		fmt.Fprintf(c, "hello\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			return fmt.Errorf("tcp %s: %v", a, err)
		}
		fmt.Printf("%s %s\n", a, strings.TrimSpace(line))
	}
	return nil
}
