//! SQLite connections that sqlx opened, lent to rusqlite for bulk work: the crate's only `unsafe`.
//!
//! Invariant: a rusqlite view of a connection exists only while sqlx's lock on that connection
//! ([`LockedSqliteHandle`]) is held, by one thread at a time, and every statement prepared on it
//! is finalized before the lock goes back. [`Lent`] keeps it: it mutably borrows the lock, so the
//! lock outlives it and nothing else uses the connection meanwhile; it is `Send` but not `Sync`
//! or `Clone`, so one thread at a time holds it; and [`Lent::with`] hands the closure a borrowed
//! `rusqlite::Connection`, so nothing prepared on it can escape the call.
//!
//! Why: through sqlx every statement is a message to the connection's worker thread and back;
//! prepared once and stepped per row on the handle, bulk writes (ingest, receipts) and the SQL
//! target's batches avoid those hand-offs. The two crates share `libsqlite3-sys`, so the handle
//! is the same kind of object on both sides; transactions stay sqlx's.

use std::marker::PhantomData;
use std::ptr::NonNull;

use rusqlite::ffi;
use sqlx::sqlite::LockedSqliteHandle;

/// A locked sqlx SQLite connection, lent to rusqlite.
pub struct Lent<'h> {
    db: NonNull<ffi::sqlite3>,
    _locked: PhantomData<&'h mut ()>,
}

// SAFETY: the handle is used by one thread at a time: `Lent` is neither `Clone` nor `Sync`, and
// the lock it borrows is held (and unused) by its owner until `Lent` is dropped.
unsafe impl Send for Lent<'_> {}

impl<'h> Lent<'h> {
    /// Lends the connection `handle` keeps locked, for as long as the borrow lasts.
    pub fn new<'c>(handle: &'h mut LockedSqliteHandle<'c>) -> Self {
        Lent {
            db: handle.as_raw_handle(),
            _locked: PhantomData,
        }
    }

    /// Runs `f` on the connection through rusqlite. Fails only if rusqlite cannot wrap the handle.
    pub fn with<R>(&mut self, f: impl FnOnce(&rusqlite::Connection) -> R) -> rusqlite::Result<R> {
        // SAFETY: `self` borrows sqlx's lock on the connection and is used by one thread at a
        // time (see the module invariant), so this thread is the handle's only user for the call.
        // `from_handle` does not take ownership (the handle is not closed when `conn` drops), and
        // everything prepared on `conn` borrows it, so it is finalized before this returns.
        let conn = unsafe { rusqlite::Connection::from_handle(self.db.as_ptr()) }?;
        Ok(f(&conn))
    }
}

/// Runs `f` where it may block: on a multi-threaded runtime (the daemon's) other tasks move to
/// another worker meanwhile; elsewhere (a current-thread runtime) it just runs.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The primary result code of an SQLite error (an extended code keeps its primary one in the low
/// byte: 778 IOERR_WRITE is 10 IOERR); `None` for anything that is not an SQLite error.
pub fn primary_code(e: &sqlx::Error) -> Option<i64> {
    let sqlx::Error::Database(d) = e else {
        return None;
    };
    d.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    d.code()?.parse::<i64>().ok().map(|c| c & 0xff)
}
