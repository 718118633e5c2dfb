// gobare: the floor of bench/floor.ts on the Go side. The rig's gosshd ($PERF_DIR/go/main.go)
// without Postgres: golang.org/x/crypto/ssh doing one SSH op as shell-auth's `create` does it,
// with nothing of ours around it.
//
//   - ed25519 host key, generated at start (or read from -hostkey, OpenSSH format).
//   - PublicKeyCallback: user `keys` only, any key; it returns permissions, and x/crypto/ssh
//     authenticates only after the signature verifies (the callback's answer is cached per
//     connection, so the query and the signed request cost one call).
//   - session + exec `create ...`: exactly 100 bytes on stdout (a 36-character uuid v4 + 64 hex,
//     all from crypto/rand), EOF, exit-status 0, close. Anything else: exit-status 1.
//
// Prints `listening PORT` on stdout when it accepts connections.
// usage: gobare [-listen 127.0.0.1:0] [-hostkey FILE]
// Built offline in GOPATH mode from Debian's packages, as the rig builds gosshd:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off go build -o BINARY main.go
//
// GOMAXPROCS is left to the runtime (all cores). Go sets TCP_NODELAY on TCP connections by default.
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

const (
	sshUser          = "keys"
	handshakeTimeout = 30 * time.Second
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	hostKeyFile := flag.String("hostkey", "", "ed25519 host key (OpenSSH private key file); generated when empty")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	var hostKey ssh.Signer
	if *hostKeyFile == "" {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			log.Fatal(err)
		}
		if hostKey, err = ssh.NewSignerFromKey(priv); err != nil {
			log.Fatal(err)
		}
	} else {
		pem, err := os.ReadFile(*hostKeyFile)
		if err != nil {
			log.Fatal(err)
		}
		if hostKey, err = ssh.ParsePrivateKey(pem); err != nil {
			log.Fatalf("host key: %v", err)
		}
	}
	if hostKey.PublicKey().Type() != ssh.KeyAlgoED25519 {
		log.Fatalf("host key is %s, want ssh-ed25519", hostKey.PublicKey().Type())
	}

	cfg := &ssh.ServerConfig{PublicKeyCallback: publicKey, ServerVersion: "SSH-2.0-floor-gobare"}
	cfg.AddHostKey(hostKey)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %d\n", ln.Addr().(*net.TCPAddr).Port)

	for {
		conn, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			log.Printf("accept: %v", err)
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: back off instead of spinning
			continue
		}
		go handleConn(conn, cfg)
	}
}

// publicKey accepts any key of user `keys`; x/crypto/ssh still verifies the signature before
// it treats the connection as authenticated.
func publicKey(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	if c.User() != sshUser {
		return nil, fmt.Errorf("unknown user %q", c.User())
	}
	return &ssh.Permissions{}, nil
}

func handleConn(nConn net.Conn, cfg *ssh.ServerConfig) {
	defer nConn.Close()
	nConn.SetDeadline(time.Now().Add(handshakeTimeout))
	sconn, chans, reqs, err := ssh.NewServerConn(nConn, cfg)
	if err != nil {
		return // handshake or auth failed (the client was told)
	}
	defer sconn.Close()
	nConn.SetDeadline(time.Time{})
	go ssh.DiscardRequests(reqs)
	for nch := range chans {
		if nch.ChannelType() != "session" {
			nch.Reject(ssh.UnknownChannelType, "only session channels")
			continue
		}
		ch, chReqs, err := nch.Accept()
		if err != nil {
			continue
		}
		go session(ch, chReqs)
	}
}

func session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		if req.Type != "exec" {
			req.Reply(false, nil) // no shell, pty, env, subsystems (no-op when no reply is wanted)
			continue
		}
		var p struct{ Command string }
		if err := ssh.Unmarshal(req.Payload, &p); err != nil {
			req.Reply(false, nil)
			continue
		}
		req.Reply(true, nil)
		var status uint32 = 1
		if strings.HasPrefix(p.Command, "create ") {
			if key, err := newAPIKey(); err == nil {
				io.WriteString(ch, key)
				status = 0
			}
		}
		ch.CloseWrite() // EOF, then exit-status, then close: the order OpenSSH uses
		ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
		return
	}
}

// newAPIKey: a uuid v4 (36 characters) + 64 hex, from crypto/rand: 100 characters.
func newAPIKey() (string, error) {
	var b [48]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // variant 10
	u := hex.EncodeToString(b[:16])
	return u[0:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:32] + hex.EncodeToString(b[16:]), nil
}
