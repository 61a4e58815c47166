"""Carves a loop-mounted ext4 image after a panic wipe, with a given hush
binary: counts surviving key-file versions (the old format by its magic,
any format by 64-byte pieces of every version seen) and times the panic
wipe. Needs root (mkfs.ext4, mount -o loop).

    cargo build --release -p hush-cli
    sudo python3 bench/carve.py target/release/hush
"""
import os, subprocess, sys, tempfile, time
hush = sys.argv[1]
work = tempfile.mkdtemp(prefix="carve-")
img, mnt = f"{work}/disk.img", f"{work}/mnt"
os.makedirs(mnt)
subprocess.run(["truncate", "-s", "64M", img], check=True)
subprocess.run(["mkfs.ext4", "-q", "-F", img], check=True)
subprocess.run(["mount", "-o", "loop", img, mnt], check=True)
env = dict(os.environ, HUSH_MIN_PASSPHRASE_SCORE="0")
env.pop("HUSH_HOME", None)
relay = subprocess.Popen([hush, "serve", "--data", f"{work}/relay", "--listen", "127.0.0.1:0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
relay.stdout.readline()
invite = subprocess.run([hush, "admin", "invite", "--data", f"{work}/relay"], capture_output=True, text=True, check=True).stdout.strip()
home = f"{mnt}/alice"
def run(args, passphrase, extra={}):
    return subprocess.run([hush, "--home", home] + args, capture_output=True, text=True,
                          env=dict(env, HUSH_PASSPHRASE=passphrase, **extra), stdin=subprocess.DEVNULL)
r = run(["join", invite], "pw", {"HUSH_PANIC_PASSPHRASE": "duress"})
assert r.returncode == 0, r.stderr
versions = []
for round in range(5):
    for p in ["wrong", "wrong", "pw"]:
        run(["whoami"], p)
        versions.append(open(f"{home}/key", "rb").read())
start = time.time()
r = run(["whoami"], "duress")
print(f"panic wipe (process start to exit): {time.time() - start:.3f} s, exit {r.returncode}, home exists: {os.path.exists(home)}")
subprocess.run(["sync"]); subprocess.run(["umount", mnt], check=True)
relay.kill()
raw = open(img, "rb").read()
magic = raw.count(b"HUSHKEY3")
pieces = set()
for v in versions:
    for i in range(0, len(v) - 63, 64):
        pieces.add(v[i:i+64])
found = sum(1 for i in range(0, len(raw) - 63, 64) if raw[i:i+64] in pieces)
print(f"{len(versions)} key-file versions seen; after the wipe the raw image holds {magic} copies of the magic HUSHKEY3 and {found} 64-byte pieces of those versions")
