//! An in-memory [`ByteStream`] for tests, benches and fuzzing: the client's side is a
//! script of what reads find (bytes in pieces, WouldBlock, EINTR, end of stream), and
//! what the server writes is collected. Its state is shared with a [`Pipe`] handle, so
//! the test that handed the stream to a connection can keep feeding and inspecting it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::rc::Rc;

use mio::event::Source;
use mio::{Interest, Registry, Token};

use crate::stream::ByteStream;

/// What the next read finds.
#[derive(Debug, Clone)]
enum Step {
    /// These bytes (from `at` on), in as many reads as it takes.
    Bytes {
        data: Rc<[u8]>,
        at: usize,
    },
    WouldBlock,
    Interrupted,
    /// The client hung up: every read from now on returns 0.
    End,
}

#[derive(Debug, Default)]
struct Wire {
    steps: VecDeque<Step>,
    /// Bytes the server wrote, unless `discard_written`.
    written: Vec<u8>,
    written_total: u64,
    discard_written: bool,
    /// Bytes writes may still take before they would block; `None`: no limit.
    write_room: Option<usize>,
    write_shut: bool,
}

/// The connection's end of the stream.
#[derive(Debug, Default)]
pub struct MemoryStream {
    wire: Rc<RefCell<Wire>>,
}

/// The client's end: what it sends and what it got.
#[derive(Debug, Clone)]
pub struct Pipe {
    wire: Rc<RefCell<Wire>>,
}

impl MemoryStream {
    /// A stream with nothing to read yet, and the handle that scripts it.
    pub fn new() -> (MemoryStream, Pipe) {
        let stream = MemoryStream::default();
        let pipe = Pipe { wire: Rc::clone(&stream.wire) };
        (stream, pipe)
    }
}

impl Pipe {
    /// `bytes` arrive: the next reads take them, in pieces as small as the reads ask.
    pub fn arrive(&self, bytes: impl Into<Rc<[u8]>>) {
        self.wire.borrow_mut().steps.push_back(Step::Bytes { data: bytes.into(), at: 0 });
    }

    /// The next read reports WouldBlock (reads do so anyway once the script is empty).
    pub fn would_block(&self) {
        self.wire.borrow_mut().steps.push_back(Step::WouldBlock);
    }

    /// The next read is interrupted by a signal (EINTR).
    pub fn interrupt(&self) {
        self.wire.borrow_mut().steps.push_back(Step::Interrupted);
    }

    /// The client hangs up once what is scripted before has been read.
    pub fn hang_up(&self) {
        self.wire.borrow_mut().steps.push_back(Step::End);
    }

    /// Bytes not read yet (scripted events aside).
    pub fn unread(&self) -> usize {
        let wire = self.wire.borrow();
        let pending = |step: &Step| match step {
            Step::Bytes { data, at } => data.len().saturating_sub(*at),
            _ => 0,
        };
        wire.steps.iter().map(pending).sum()
    }

    /// Writes take at most `room` more bytes before they would block; `None`: no limit.
    pub fn set_write_room(&self, room: Option<usize>) {
        self.wire.borrow_mut().write_room = room;
    }

    /// Writes are counted but not kept (benches: no memory grows).
    pub fn discard_written(&self) {
        self.wire.borrow_mut().discard_written = true;
    }

    /// Takes what the server wrote so far.
    pub fn take_written(&self) -> Vec<u8> {
        std::mem::take(&mut self.wire.borrow_mut().written)
    }

    /// All bytes the server wrote, kept or not.
    pub fn written_total(&self) -> u64 {
        self.wire.borrow().written_total
    }

    /// The server shut its sending side.
    pub fn write_shut(&self) -> bool {
        self.wire.borrow().write_shut
    }
}

impl Read for MemoryStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut wire = self.wire.borrow_mut();
        let Some(step) = wire.steps.front_mut() else { return Err(ErrorKind::WouldBlock.into()) };
        match step {
            Step::Bytes { data, at } => {
                let rest = data.get(*at..).unwrap_or_default();
                let n = out.len().min(rest.len());
                out.get_mut(..n).unwrap_or_default().copy_from_slice(rest.get(..n).unwrap_or_default());
                *at += n;
                if *at >= data.len() {
                    wire.steps.pop_front();
                }
                Ok(n)
            }
            Step::WouldBlock => {
                wire.steps.pop_front();
                Err(ErrorKind::WouldBlock.into())
            }
            Step::Interrupted => {
                wire.steps.pop_front();
                Err(ErrorKind::Interrupted.into())
            }
            Step::End => Ok(0),
        }
    }
}

impl Write for MemoryStream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut wire = self.wire.borrow_mut();
        if wire.write_shut {
            return Err(ErrorKind::BrokenPipe.into());
        }
        let n = wire.write_room.map_or(bytes.len(), |room| room.min(bytes.len()));
        if n == 0 && !bytes.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        if let Some(room) = &mut wire.write_room {
            *room = room.saturating_sub(n);
        }
        if !wire.discard_written {
            wire.written.extend_from_slice(bytes.get(..n).unwrap_or_default());
        }
        wire.written_total += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Nothing to watch: the test drives the connection itself.
impl Source for MemoryStream {
    fn register(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }

    fn reregister(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }

    fn deregister(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }
}

impl ByteStream for MemoryStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.wire.borrow_mut().write_shut = true;
        Ok(())
    }
}
