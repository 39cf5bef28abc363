// Command udpecho answers every UDP datagram on the port given with
// "udp:", the sender's address and the datagram: the tests' UDP server
// inside a container, which tells a DNATed client (its own address) from a
// proxied one (the host's).
package main

import (
	"log"
	"net"
	"os"
)

func main() {
	pc, err := net.ListenPacket("udp", ":"+os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			log.Fatal(err)
		}
		ip := from.(*net.UDPAddr).IP.String()
		pc.WriteTo(append([]byte("udp:"+ip+":"), buf[:n]...), from)
	}
}
