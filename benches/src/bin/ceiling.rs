//! carshare-ceiling: what this machine allows for carshare's kind of work, as one server of
//! our own, with nothing of carshare in it. Each `POST` is parsed by hyper, its body is copied
//! into a reused WebAssembly instance and read there by one call (as a context reads its
//! request), and a record of it is committed durably to redb by one writer thread that batches
//! every waiting record into one transaction and one fsync (group commit); then 201 is
//! answered. `benches/ceiling.sh` runs it and carshare back to back under the same load.
//!
//! `carshare-ceiling [--listen 127.0.0.1:8090] [--data-dir DIR]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use redb::{Database, TableDefinition};
use tokio::sync::oneshot;
use wasmtime::{Engine, Instance, Memory, Module, Store, TypedFunc};

const RECORDS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("records");

/// A guest that reads every byte of its input (a checksum), as a context reads its request.
const GUEST: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "handle") (param $len i32) (result i32)
    (local $i i32) (local $sum i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $sum (i32.add (local.get $sum) (i32.load8_u (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $sum)))
"#;

#[derive(Parser)]
#[command(about = "The machine's ceiling for carshare's work: hyper, one wasm call, group commit")]
struct Args {
    /// Address to serve on
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Where the redb file goes (a temporary directory if not given)
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// One reused instance: its store, its memory and its entry point.
struct Guest {
    store: Store<()>,
    memory: Memory,
    handle: TypedFunc<i32, i32>,
}

struct Ceiling {
    engine: Engine,
    module: Module,
    idle: Mutex<Vec<Guest>>,
    commits: Mutex<mpsc::Sender<(Vec<u8>, oneshot::Sender<()>)>>,
}

impl Ceiling {
    fn guest(&self) -> Guest {
        if let Some(g) = self.idle.lock().unwrap().pop() {
            return g;
        }
        let mut store = Store::new(&self.engine, ());
        let instance = Instance::new(&mut store, &self.module, &[]).expect("instantiate");
        let memory = instance.get_memory(&mut store, "memory").expect("memory");
        let handle = instance.get_typed_func(&mut store, "handle").expect("handle");
        Guest {
            store,
            memory,
            handle,
        }
    }

    /// Runs the guest on `body` in a reused instance.
    fn call(&self, body: &[u8]) -> i32 {
        let mut g = self.guest();
        let len = body.len().min(65_536);
        g.memory.write(&mut g.store, 0, &body[..len]).expect("fits");
        let sum = g.handle.call(&mut g.store, len as i32).expect("call");
        self.idle.lock().unwrap().push(g);
        sum
    }
}

/// Commits every waiting record in one transaction, then answers each.
fn writer(db: Database, rx: mpsc::Receiver<(Vec<u8>, oneshot::Sender<()>)>) {
    let mut next = 0u64;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let txn = db.begin_write().expect("begin");
        {
            let mut t = txn.open_table(RECORDS).expect("table");
            for (record, _) in &batch {
                next += 1;
                t.insert(next, record.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
        for (_, reply) in batch {
            let _ = reply.send(());
        }
    }
}

async fn serve(
    ceiling: Arc<Ceiling>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let body = req.into_body().collect().await?.to_bytes();
    let sum = ceiling.call(&body);
    let (tx, rx) = oneshot::channel();
    let record = format!("{{\"sum\":{sum},\"len\":{}}}", body.len()).into_bytes();
    ceiling
        .commits
        .lock()
        .unwrap()
        .send((record, tx))
        .expect("the writer runs");
    let _ = rx.await;
    let mut resp = hyper::Response::new(Full::new(Bytes::from(format!("{{\"id\":1,\"sum\":{sum}}}"))));
    *resp.status_mut() = hyper::StatusCode::CREATED;
    Ok(resp)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = args.data_dir.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("the data dir");
    let db = Database::create(dir.join("ceiling.redb")).expect("open redb");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || writer(db, rx));
    let engine = Engine::default();
    let module = Module::new(&engine, wat::parse_str(GUEST).expect("valid wat")).expect("compile");
    let ceiling = Arc::new(Ceiling {
        engine,
        module,
        idle: Mutex::new(Vec::new()),
        commits: Mutex::new(tx),
    });
    let listener = tokio::net::TcpListener::bind(args.listen).await.expect("bind");
    eprintln!(
        "carshare-ceiling ready on http://{}",
        listener.local_addr().expect("bound")
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ceiling = ceiling.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| serve(ceiling.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
