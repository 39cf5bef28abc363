// Command udpecho answers every UDP datagram on the port given with
// "udp:" and the datagram: the tests' UDP server inside a container.
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
		pc.WriteTo(append([]byte("udp:"), buf[:n]...), from)
	}
}
