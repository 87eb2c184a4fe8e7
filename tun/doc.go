// Package tun creates the kernel TUN device for nodes run in kernel TUN mode
// (--tun): the device itself, its MTU, the node's addresses and the routes
// that send overlay prefixes into it, all removed again by Close.
//
// The node engine (package overlay) never sees this package's internals: it
// talks to its packet device only through wireguard-go's tun.Device, which
// Device.TUN returns, exactly as it does with the gVisor netstack (package
// netstack). Kernel TUN mode therefore plugs in without changing the engine.
// The tun.Device comes from wireguard-go's tun.CreateTUN, which negotiates
// virtio-net offloads (TSO/USO, GRO on write), so batches stay large.
//
// Ownership: every device this package creates carries the interface alias
// "agentnet" (IFLA_IFALIAS). Create and Cleanup delete a device of the
// configured name only when it carries that mark and is a TUN device; any
// other link of that name is left alone and reported as ErrForeignDevice.
//
// Network namespaces: Create and Cleanup act on the network namespace of
// the calling OS thread (they lock it for their duration). Create binds a
// netlink handle to that namespace, so Close may run on any goroutine.
//
// Only Linux is supported; elsewhere Create returns an error that wraps
// errors.ErrUnsupported, and nodes use netstack mode.
package tun
