#!/usr/bin/env python3
"""fuzz/seeds.py: writes the hand-made seeds fuzz/corpus/<target>/seed-*.

`make fuzz` keeps seed-* files as they are and manages the other corpus files.
Rerun after changing an input format: python3 fuzz/seeds.py"""
import os

ROOT = os.path.dirname(os.path.abspath(__file__))


def w(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# json: JSON texts
w("json", "object", '{"worker_status":"busy","external_metadata":{"step":1,"note":null},'
  '"n":-0.0,"r":0.1,"i":-9223372036854775808}')
w("json", "nested", '{"a":[1,2.5,[true,false,null],{"b":"\\u0000\\n\\"\\\\\\u00e9\\ud83d\\ude00"}],"":{}}')
w("json", "reals", "[1e300,4.9e-324,2.2250738585072014e-308,123456789012345678,1e15,1e16,"
  "0.30000000000000004,-1.5e-7]")
w("json", "string", '"a string long enough to go to the heap \\u001f"')
w("json", "scalar", "-12345")

# fold: merge-key set byte, STATE \0 PATCH [\0 PATCH2]
w("fold", "merge", b'\x00{"worker_status":"idle","external_metadata":{"a":1,"b":2}}\x00'
  b'{"external_metadata":{"a":null,"c":[1]},"worker_status":"busy"}')
w("fold", "replace", b'\x00{"external_metadata":5}\x00{"external_metadata":{"x":null,"y":1}}\x00'
  b'{"internal_metadata":{"z":{"deep":null}}}')
w("fold", "reset-then-merge", b'\x00{"external_metadata":{"old":1}}\x00{"external_metadata":null}\x00'
  b'{"external_metadata":{"new":2}}')
w("fold", "custom-keys", b'\x03{"":{"k":1},"a":[1]}\x00{"":{"k":null},"a":{"m":null}}')
w("fold", "not-object", b'\x00[1,2]\x00{"a":1}')

# receiver: odd byte 0 = structured (method, target, framing, [suffix], body); even = raw
w("receiver", "put", b'\x01\x01\x00\x00{"worker_status":"busy","external_metadata":{"step":1,"gone":null}}')
w("receiver", "put-chunked", b'\x01\x01\x06\x02{"internal_metadata":{"a":1},"x":[1,2,3]}')
w("receiver", "put-suffix-expect", b'\x01\x01\x06\x04\x03abc{"external_metadata":{"a":null}}')
w("receiver", "get", b"\x01\x00\x00\x00")
w("receiver", "bad-json", b'\x01\x01\x00\x00{"a":')
w("receiver", "not-object", b"\x01\x01\x00\x00[1]")
w("receiver", "405", b"\x01\x02\x00\x00{}")
w("receiver", "404", b"\x01\x00\x04\x00")
w("receiver", "raw-put", b"\x00PUT /worker/r HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
w("receiver", "raw-pipelined", b"\x00GET /worker HTTP/1.1\r\nHost: x\r\n\r\nPUT /worker HTTP/1.1\r\n"
  b"Host: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
w("receiver", "raw-garbage", b"\x00\x01\x02 / HTTP/9.9\r\n\r\n")


# coalesce: header byte, jitter seed, timing byte, then ops (format: fuzz/fuzz_coalesce.c)
def obj(members):  # [(key index, value bytes)]: count, hint, members
    return bytes([len(members), 0]) + b"".join(bytes([k]) + v for k, v in members)


def o(members):
    return b"\x09" + obj(members)


def i8(x):
    return b"\x03" + bytes([x & 0xFF])


NULL = b"\x00"
S = b"\x06\x02\x00\x01"  # short string "ab"


def enq(members, first=False):  # op 0; the first enqueue also reads the direct pending's hint
    return b"\x00" + obj(members) + (b"\x00" if first else b"")


seq = b"\x00\x07\x00"
seq += enq([(1, o([(0, i8(1))])), (0, S)], True)  # {external_metadata:{x:1}, worker_status:"ab"}
seq += enq([(1, o([(1, NULL), (0, i8(2))]))])  # {external_metadata:{y:null,x:2}}
seq += b"\x05\x01" + b"\x01"  # run 16 ms: the first send (its byte: not answered inside)
seq += enq([(1, NULL)])  # {external_metadata:null}
seq += enq([(1, o([(2, i8(3))]))])  # {external_metadata:{z:3}}
seq += b"\x0c\x10"  # RETRY, retry-after 16*37 ms
seq += b"\x05\xff\x01"  # run: the retry absorbs pending
seq += b"\x04"  # OK
seq += b"\x06\x07"  # check the direct path; drain
w("coalesce", "retry-absorb", seq)
w("coalesce", "merge-slot-custom-key", b"\x04\x01\x15" + enq([(3, o([(0, i8(1))]))], True) + enq([(3, i8(5))])
  + enq([(3, o([(1, i8(2))]))]) + b"\x86\x07\x00")
w("coalesce", "close-inflight", b"\x00\x02\x00" + enq([(0, S)], True) + b"\x05\x01\x01"
  + enq([(2, o([(0, i8(9))]))]) + b"\xff\x14")
