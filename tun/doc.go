// Package tun will create the kernel TUN device for nodes run with --tun:
// addresses, routes and MTU, removed again on exit. Until then every node
// runs on a gVisor netstack (package netstack), which needs no root.
//
// The node engine (package overlay) talks to both through wireguard-go's
// tun.Device interface, so kernel TUN mode plugs in without changing it.
package tun
