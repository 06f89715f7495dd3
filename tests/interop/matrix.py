#!/usr/bin/env python3
"""Read a Delta table with one of several engines that are not delta-rs.

Usage: matrix.py READER TABLE_URI [VERSION]
       matrix.py sail-sql SQL_FILE NAME=TABLE_URI...

READER is one of
  polars       polars-deltalake (delta-kernel-rs);
  duckdb       DuckDB's delta extension (delta-kernel-rs through FFI), loaded
               from its wheel, never installed from the web;
  chdb         embedded ClickHouse, deltaLake* table functions (delta-kernel-rs);
  chdb-native  the same with allow_delta_kernel_rs=0: ClickHouse's own Delta
               reader, which shares no code with delta-kernel-rs (no VERSION);
  sail         Sail's Spark Connect server (its own Rust Delta reader) through
               pyspark-client: spark.read.format("delta") then spark.sql over
               a temporary view. The server is started in this process on a
               free loopback port and stopped afterwards, unless
               GOLD_SAIL_REMOTE=sc://127.0.0.1:PORT names a running one.

TABLE_URI is a local path, a file:// URI, s3://bucket/path or
az://container/path (abfss://container@account.dfs.core.windows.net/path
too). Object stores are the emulators of tests/interop/emulators.sh, whose
exports are read here: s3:// needs AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY (AWS_REGION defaults to us-east-1), so that no client
falls back to the EC2 metadata service; az:// needs
AZURE_STORAGE_USE_EMULATOR=true (Azurite at AZURITE_BLOB_STORAGE_URL,
default http://127.0.0.1:10000, account devstoreaccount1).

VERSION reads that table version (time travel), in every reader but
chdb-native, which exits with status 3.

sail-sql runs the one query of SQL_FILE (a gold SQL model, rendered) on
Sail's Spark SQL, over a temporary view NAME for each Delta table, and
prints its result the same way (reader "sail-sql").

Prints one JSON document on stdout, like read_delta.py:
{"reader", "engine", "version", "rows", "columns", "dtypes", "data"}, where
dtypes are the reader's Arrow types and data holds every row as an object of
strings (null stays null), rendered the same way whatever the reader:
  - rows are sorted (by their rendered values, null first), since readers
    return files in different orders;
  - integers in decimal; floats as Python's repr (shortest round trip);
    booleans "true"/"false";
  - decimals in fixed point with the column's scale ("12.50", "-0.01");
  - dates "YYYY-MM-DD";
  - timestamps with a time zone in UTC, "YYYY-MM-DDTHH:MM:SS.ffffffZ";
    without one (timestamp_ntz), the same without "Z". chdb cannot tell the
    two apart: it returns timestamp_ntz as UTC instants, so with "Z";
  - strings as they are, binary in hex (also a binary column that chdb
    hands over as strings: one with bytes that are not UTF-8), lists/structs/maps as compact JSON
    of their rendered items.
"""
import datetime as dt
import decimal
import json
import os
import sys
from urllib.parse import urlparse

import pyarrow as pa

# Azurite's well-known development account (public, not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

READERS = ("polars", "duckdb", "chdb", "chdb-native", "sail")


class Unsupported(Exception):
    pass


# --- where the table is -----------------------------------------------------

class Location:
    """A table's store: kind is local, s3 or az; for s3/az, the bucket or
    container and the key prefix (no slashes around)."""

    def __init__(self, uri):
        self.uri = uri
        u = urlparse(uri)
        if u.scheme in ("s3", "s3a"):
            self.kind, self.bucket = "s3", u.netloc
        elif u.scheme in ("az", "azure", "adl", "abfs", "abfss"):
            self.kind, self.bucket = "az", u.netloc.split("@")[0] if "@" in u.netloc else u.netloc
        elif u.scheme in ("", "file") or len(u.scheme) == 1:
            self.kind = "local"
            self.path = os.path.abspath(u.path if u.scheme == "file" else uri)
            return
        else:
            raise SystemExit(f"matrix.py: unsupported URI scheme {u.scheme}://")
        self.key = u.path.strip("/")
        if self.kind == "s3":
            missing = [k for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(k)]
            if missing:
                raise SystemExit(f"matrix.py: s3:// needs {', '.join(missing)} (see emulators.sh)")
            self.endpoint = os.environ["AWS_ENDPOINT_URL"].rstrip("/")
            self.region = os.environ.get("AWS_REGION", "us-east-1")
        else:
            if os.environ.get("AZURE_STORAGE_USE_EMULATOR", "").lower() not in ("1", "true"):
                raise SystemExit("matrix.py: az:// needs AZURE_STORAGE_USE_EMULATOR=true (see emulators.sh)")
            self.endpoint = os.environ.get("AZURITE_BLOB_STORAGE_URL", "http://127.0.0.1:10000").rstrip("/")

    def az_connection_string(self):
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint={self.endpoint}/{AZURITE_ACCOUNT};")

    def canonical(self):
        """The URI as s3://bucket/key or az://container/key."""
        return self.path if self.kind == "local" else f"{self.kind}://{self.bucket}/{self.key}"


def sql_str(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "''") + "'"


# --- the readers: each returns (engine, pyarrow.Table) ------------------------

def read_polars(loc, version):
    import polars
    import polars_deltalake as pdl
    from importlib.metadata import version as pkg
    opts = None
    if loc.kind == "s3":
        opts = {"AWS_ENDPOINT_URL": loc.endpoint, "AWS_REGION": loc.region,
                "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
                "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
                "AWS_ALLOW_HTTP": "true" if loc.endpoint.startswith("http://") else "false"}
    elif loc.kind == "az":
        opts = {"azure_storage_use_emulator": "true"}
    frame = pdl.read_delta(loc.canonical(), version=version, storage_options=opts)
    return f"polars-deltalake {pkg('polars-deltalake')} (polars {polars.__version__})", frame.to_arrow()


def read_duckdb(loc, version):
    import importlib
    import pathlib
    import duckdb

    def extension(name):
        mod = importlib.import_module(f"duckdb_extension_{name}")
        return next(pathlib.Path(mod.__file__).parent.glob(f"extensions/*/{name}.duckdb_extension"))

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    needed = {"local": [], "s3": ["httpfs"], "az": ["azure"]}[loc.kind] + ["delta"]
    for name in needed:
        con.execute(f"LOAD {sql_str(str(extension(name)))}")
    con.execute("SET TimeZone = 'UTC'")
    if loc.kind == "s3":
        u = urlparse(loc.endpoint)
        con.execute(
            "CREATE SECRET gold_s3 (TYPE s3, KEY_ID {}, SECRET {}, REGION {}, ENDPOINT {}, URL_STYLE 'path', USE_SSL {})".format(
                sql_str(os.environ["AWS_ACCESS_KEY_ID"]), sql_str(os.environ["AWS_SECRET_ACCESS_KEY"]),
                sql_str(loc.region), sql_str(u.netloc), "true" if u.scheme == "https" else "false"))
    elif loc.kind == "az":
        con.execute(f"CREATE SECRET gold_az (TYPE azure, CONNECTION_STRING {sql_str(loc.az_connection_string())})")
    args = sql_str(loc.canonical()) + ("" if version is None else f", version => {int(version)}")
    rel = con.sql(f"SELECT * FROM delta_scan({args})")
    table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.fetch_arrow_table()
    ext = con.sql("SELECT extension_version FROM duckdb_extensions() WHERE extension_name = 'delta'").fetchone()[0]
    return f"duckdb {duckdb.__version__} (delta extension {ext})", table


def read_chdb(loc, version, native=False):
    from chdb import session
    from importlib.metadata import version as pkg
    if loc.kind == "local":
        source = f"deltaLakeLocal({sql_str(loc.path)})"
    elif loc.kind == "s3":
        source = "deltaLake({}, {}, {})".format(sql_str(f"{loc.endpoint}/{loc.bucket}/{loc.key}/"),
                                                sql_str(os.environ["AWS_ACCESS_KEY_ID"]),
                                                sql_str(os.environ["AWS_SECRET_ACCESS_KEY"]))
    else:
        source = "deltaLakeAzure({}, {}, {})".format(sql_str(loc.az_connection_string()), sql_str(loc.bucket),
                                                     sql_str(loc.key + "/"))
    settings = ["session_timezone = 'UTC'", f"allow_delta_kernel_rs = {0 if native else 1}"]
    if version is not None:
        if native:
            raise Unsupported("chdb-native (ClickHouse's own Delta reader) has no time travel")
        settings.append(f"delta_lake_snapshot_version = {int(version)}")
    # ClickHouse reads local files only under its user_files_path, which chdb
    # sets to the working directory: work from / for the query.
    cwd = os.getcwd()
    os.chdir("/")
    s = session.Session()
    try:
        table = s.query(f"SELECT * FROM {source} SETTINGS {', '.join(settings)}", "ArrowTable")
        server = str(s.query("SELECT version()", "CSV")).strip().strip('"')
    finally:
        s.close()
        os.chdir(cwd)
    how = "ClickHouse's Delta reader" if native else "delta-kernel-rs"
    return f"chdb {pkg('chdb')} (ClickHouse {server}, {how})", table


class SailSession:
    """A Spark session on Sail: a server started in this process on a free
    loopback port (stopped on exit), or the one GOLD_SAIL_REMOTE names."""

    def __enter__(self):
        # Quiet Sail's INFO log; keep any object-store client off the EC2
        # metadata service. Both must be set before the server starts.
        os.environ.setdefault("RUST_LOG", "error")
        os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        remote, self.server = os.environ.get("GOLD_SAIL_REMOTE"), None
        if not remote:
            from pysail.spark import SparkConnectServer
            self.server = SparkConnectServer("127.0.0.1", 0)
            self.server.start(background=True)
            ip, port = self.server.listening_address
            remote = f"sc://{ip}:{port}"
        from pyspark.sql import SparkSession
        self.spark = SparkSession.builder.remote(remote).getOrCreate()
        self.spark.conf.set("spark.sql.session.timeZone", "UTC")
        return self.spark

    def __exit__(self, *exc):
        self.spark.stop()
        if self.server is not None:
            self.server.stop()


def sail_engine():
    from importlib.metadata import version as pkg
    return f"sail {pkg('pysail')} (pyspark-client {pkg('pyspark-client')})"


def read_sail(loc, version):
    with SailSession() as spark:
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", int(version))
        reader.load(loc.canonical()).createOrReplaceTempView("gold_matrix")
        table = spark.sql("SELECT * FROM gold_matrix").toArrow()
    return sail_engine(), table


def sail_sql(sql_file, views):
    """Runs the query of SQL_FILE on Sail, over a temporary view per
    NAME=URI (the Delta table at URI, latest version)."""
    with open(sql_file, encoding="utf-8") as f:
        query = f.read()
    with SailSession() as spark:
        for view in views:
            name, _, uri = view.partition("=")
            spark.read.format("delta").load(Location(uri).canonical()).createOrReplaceTempView(name)
        table = spark.sql(query).toArrow()
    return sail_engine(), table


# --- rendering -----------------------------------------------------------------

EPOCH = dt.datetime(1970, 1, 1)


def render(v):
    """One value as the docstring says (nested values as JSON-ready data)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, decimal.Decimal):
        return format(v, "f")
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            return v.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return v.strftime("%Y-%m-%dT%H:%M:%S.%f")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if isinstance(v, dict):
        return json.dumps({k: render(x) for k, x in v.items()}, separators=(",", ":"))
    if isinstance(v, list):
        # A map column comes as a list of (key, value) pairs.
        return json.dumps([render(x) if not isinstance(x, tuple) else [render(y) for y in x] for x in v],
                          separators=(",", ":"))
    return str(v)


def column_values(col):
    """A column's values, rendered. Timestamps go through integer micros so
    that no time-zone database or nanosecond type is involved."""
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.cast(t.value_type), t.value_type
    if pa.types.is_timestamp(t):
        micros = col.cast(pa.timestamp("us", t.tz), safe=False).cast(pa.int64()).to_pylist()
        fmt = "%Y-%m-%dT%H:%M:%S.%f" + ("Z" if t.tz else "")
        return [None if m is None else (EPOCH + dt.timedelta(microseconds=m)).strftime(fmt) for m in micros]
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        # chdb hands binary columns (gold's key and attribute hashes) over
        # as strings; bytes that are not UTF-8 are rendered as binary, in hex.
        try:
            return [render(v) for v in col.to_pylist()]
        except UnicodeDecodeError:
            col = col.cast(pa.large_binary() if pa.types.is_large_string(t) else pa.binary())
    return [render(v) for v in col.to_pylist()]


def main() -> int:
    args = sys.argv[1:]
    if len(args) >= 3 and args[0] == "sail-sql" and all("=" in a for a in args[2:]):
        engine, table = sail_sql(args[1], args[2:])
        reader, version = "sail-sql", None
        return emit(reader, engine, version, table)
    if len(args) not in (2, 3) or args[0] not in READERS:
        print(__doc__, file=sys.stderr)
        return 2
    reader, uri = args[0], args[1]
    version = int(args[2]) if len(args) == 3 else None
    loc = Location(uri)
    try:
        if reader == "polars":
            engine, table = read_polars(loc, version)
        elif reader == "duckdb":
            engine, table = read_duckdb(loc, version)
        elif reader in ("chdb", "chdb-native"):
            engine, table = read_chdb(loc, version, native=reader == "chdb-native")
        else:
            engine, table = read_sail(loc, version)
    except Unsupported as e:
        print(f"matrix.py: {e}", file=sys.stderr)
        return 3
    return emit(reader, engine, version, table)


def emit(reader, engine, version, table) -> int:
    """Prints the JSON document of the docstring."""
    names = table.column_names
    cols = [column_values(table.column(i)) for i in range(table.num_columns)]
    rows = [list(r) for r in zip(*cols)] if cols else []
    rows.sort(key=lambda r: [(v is not None, v or "") for v in r])
    print(json.dumps({
        "reader": reader,
        "engine": engine,
        "version": version,
        "rows": table.num_rows,
        "columns": names,
        "dtypes": [str(f.type) for f in table.schema],
        "data": [dict(zip(names, r)) for r in rows],
    }, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
