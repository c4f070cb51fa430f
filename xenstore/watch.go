package xenstore

import (
	"context"
	"errors"
	"strconv"
	"sync"
)

// Event is one watch event: Path changed (it was written, created or
// removed; or, for the special paths, a domain was introduced or released).
// The daemon fires every new watch once at once, with Path the watched path.
type Event struct {
	Path string
	// Overflow is true when events were dropped because the receiver fell
	// behind: anything below the watched path may have changed. Path is
	// then the watched path.
	Overflow bool
}

// maxQueuedEvents bounds the events a Watch holds for a slow receiver.
const maxQueuedEvents = 4096

// Watch delivers the events of one watch. Events arrive in the daemon's
// order on the channel from Events. The channel is closed when the watch
// ends (Unwatch, Client.Close, ResetWatches, or a failure to register it
// again after a reconnect); Err says why.
type Watch struct {
	c     *Client
	path  string
	token string

	events chan Event
	wake   chan struct{}
	done   chan struct{}

	mu       sync.Mutex
	queue    []Event
	overflow bool
	err      error
	stopped  bool
}

// Watch asks the daemon for events about path and everything below it.
// Path may also be "@introduceDomain" or "@releaseDomain". The first event,
// fired at once, has the watched path.
func (c *Client) Watch(ctx context.Context, path string) (*Watch, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, opError(msgWatch, path, ErrClosed)
	}
	c.nextToken++
	w := &Watch{
		c:      c,
		path:   path,
		token:  "qvm" + strconv.FormatUint(c.nextToken, 10),
		events: make(chan Event),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	c.watches[w.token] = w
	c.mu.Unlock()
	go w.pump()
	if _, err := c.do(ctx, nil, msgWatch, path, cstr(path), cstr(w.token)); err != nil {
		c.removeWatch(w, err)
		return nil, err
	}
	return w, nil
}

// Path returns the watched path.
func (w *Watch) Path() string { return w.path }

// Events returns the channel that delivers the watch's events.
func (w *Watch) Events() <-chan Event { return w.events }

// Err returns why the watch ended, or nil while it runs or after Unwatch.
func (w *Watch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Unwatch ends the watch and tells the daemon.
func (w *Watch) Unwatch(ctx context.Context) error {
	c := w.c
	c.mu.Lock()
	_, live := c.watches[w.token]
	c.mu.Unlock()
	if !live {
		return nil
	}
	c.removeWatch(w, nil)
	_, err := c.do(ctx, nil, msgUnwatch, w.path, cstr(w.path), cstr(w.token))
	if errors.Is(err, ErrConnectionLost) || errors.Is(err, ErrClosed) {
		return nil // the daemon dropped it with the connection
	}
	return err
}

// removeWatch forgets w and ends it with err.
func (c *Client) removeWatch(w *Watch, err error) {
	c.mu.Lock()
	if c.watches[w.token] == w {
		delete(c.watches, w.token)
	}
	c.mu.Unlock()
	w.stop(err)
}

// deliver routes an event from the daemon to its watch.
func (c *Client) deliver(path, token string) {
	c.mu.Lock()
	w := c.watches[token]
	c.mu.Unlock()
	if w != nil {
		w.push(path)
	}
}

func (w *Watch) push(path string) {
	w.mu.Lock()
	switch {
	case w.stopped || w.overflow:
	case len(w.queue) >= maxQueuedEvents:
		w.overflow = true
	default:
		w.queue = append(w.queue, Event{Path: path})
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Watch) stop(err error) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.stopped = true
	w.err = err
	w.mu.Unlock()
	close(w.done)
}

// pump hands queued events to the receiver without ever blocking the
// connection's reader.
func (w *Watch) pump() {
	defer close(w.events)
	for {
		w.mu.Lock()
		q := w.queue
		w.queue = nil
		if len(q) == 0 && w.overflow {
			q = []Event{{Path: w.path, Overflow: true}}
			w.overflow = false
		}
		w.mu.Unlock()
		for _, e := range q {
			select {
			case w.events <- e:
			case <-w.done:
				return
			}
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-w.wake:
		case <-w.done:
			return
		}
	}
}
