#!/usr/bin/env python3
"""Write seed programs for the `engine` fuzz target into fuzz/seeds/engine/.

Each seed is the byte program `fuzz_targets/engine.rs` decodes: two setting bytes, then
operations (opcode byte, then that operation's bytes; see the op_* functions there). The
seeds walk whole calls so the fuzzer starts from deep states. Run from anywhere:
    python3 fuzz/seeds/engine.py
"""
import os

NEW, RETX, CANCEL, RESPOND, CALLER, CALLEE, MUTATE, RAW, TICK, CMD = 0, 2, 3, 4, 6, 7, 8, 9, 10, 11
# indexes into the tables of engine.rs
C100, C180, C183, C200, C486, C487 = 0, 1, 2, 3, 11, 12
ACK, BYE, REINVITE, INFO = 0, 1, 2, 4


def invite(call=0, ruri=0, extra=0, worker=0):
    # method INVITE, call, ftag, ruri, cseq 1, mf 70, extra, user alice, send meta
    return [NEW, 0, call, 0, ruri, 0, 0, extra, 0, worker]


def respond(req, code, tag=0, worker=0):
    b = [RESPOND, req, code, tag]
    if code == C183:
        b.append(0)
    return b + [worker]


def caller(resp, method, bump=0, worker=0):
    return [CALLER, resp, method, bump, worker]


def tick(step, extra=0):
    return [TICK, step, extra]


SEEDS = {
    # INVITE, 180, 200, ACK, BYE, 200 to the BYE, then time.
    "basic": [0, 0] + invite() + respond(0, C180) + respond(0, C200) + caller(2, ACK)
    + caller(2, BYE, 1) + respond(1, C200) + tick(5),
    # Same, answered on worker 1 (hand-offs), policy rules on.
    "basic-w1-policy": [32, 0] + invite() + respond(0, C180, worker=1) + respond(0, C200, worker=1)
    + caller(2, ACK, worker=1) + caller(2, BYE, 1, worker=1) + respond(1, C200) + tick(5),
    # INVITE, 180, CANCEL, 487, ACK.
    "cancel": [0, 0] + invite() + respond(0, C180) + [CANCEL, 0, 0] + respond(0, C487)
    + caller(2, ACK) + tick(7),
    # Parallel fork to two UASes (R-URI is the proxy: default group 0), two 180s, 200 from one.
    "fork": [1, 0] + invite(ruri=2) + respond(0, C180, 0) + respond(1, C180, 1)
    + respond(0, C200, 0) + caller(3, ACK) + tick(8),
    # Serial group: first target 486, second answers.
    "serial": [2, 0] + invite(ruri=2) + respond(0, C486) + tick(2) + respond(1, C200)
    + caller(2, ACK) + tick(8),
    # Confirmed call terminated by management, then the BYEs answered.
    "terminate": [0, 0] + invite() + respond(0, C200) + caller(1, ACK) + [CMD, 0, 0, 0, 0]
    + respond(1, C200) + respond(2, C200) + tick(9),
    # Confirmed call left alone: the dialog times out and the proxy sends BYEs.
    "expire": [0, 0] + invite() + respond(0, C200) + caller(1, ACK) + tick(6) + tick(6)
    + respond(1, C200) + respond(2, C200),
    # Callee hangs up.
    "callee-bye": [0, 0] + invite() + respond(0, C200) + caller(1, ACK) + [CALLEE, 0, BYE, 0, 1, 0]
    + respond(1, C200) + tick(5),
    # re-INVITE from the caller.
    "reinvite": [0, 0] + invite() + respond(0, C200) + caller(1, ACK)
    + caller(1, REINVITE, 1) + respond(1, C200) + caller(2, ACK, 1) + tick(5),
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine")
os.makedirs(out, exist_ok=True)
for name, prog in SEEDS.items():
    with open(os.path.join(out, name + ".bin"), "wb") as f:
        f.write(bytes(prog))
print(f"wrote {len(SEEDS)} seeds to {out}")
