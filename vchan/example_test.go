package vchan_test

import (
	"context"
	"io"
	"log"
	"os"
	"time"

	"github.com/qvm-project/qvm/vchan"
	"github.com/qvm-project/qvm/xenstore"
)

// A server in one domain (here dom0, for domain 5 on port 512, with 64 KiB
// rings), and the client in the other.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	xs, err := xenstore.Dial(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer xs.Close()

	// In dom0:
	srv, err := vchan.Server(ctx, xs, 5, 512, 16, 16)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	if err := srv.WaitConnected(ctx); err != nil {
		log.Fatal(err)
	}
	io.Copy(os.Stdout, srv) // until the client closes

	// In domain 5, the other end:
	//	c, err := vchan.Client(ctx, xs, 0, 512)
	//	c.Write([]byte("hello from domain 5\n"))
	//	c.Close()
}
