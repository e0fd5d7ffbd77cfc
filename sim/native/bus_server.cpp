// Native bus server: the request loop of sim/bus_server.py in C++, compiled together with
// the Verilated model (prefix Vtop), so that the clock runs without Python.
//
// Built and started by sim/native.py (SimBus.start(..., server="native")).  It serves the
// same Unix-socket protocol as the cocotb server sim/bus_server.py -- framing, ops, error
// replies, cycle accounting, read latency L, WAIT_REG -- and must give exactly the same
// answers: tests/test_native_server.py replays one request sequence against both and
// compares every reply.  See sim/bus_server.py's docstring for the protocol.
//
// Usage: <binary> --socket PATH [--read-latency L] [--trace FILE]
//   --trace needs a model built with Verilator's --trace (VCD).
//
// The port widths come from nitrod_ports.h, which sim/native.py writes from the model's
// Vtop.h before compiling this file.
//
// Clock model (the cocotb server's, edge for edge; tests/test_native_server.py checks it
// with counters of all rising edges and of those with reset high): a clock of period 10 ns
// rising at time 0; reset (rst) high for the first two rising edges, then low; the bus
// inputs 0; cycle 0 starts at the falling edge after the first rising edge with rst low.
// Inputs are changed only right after a falling edge and are sampled at the next rising
// edge; reads sample r_data right after a falling edge.

#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "Vtop.h"
#include "verilated.h"
#include "nitrod_ports.h"   // written by sim/native.py: the bus ports' C++ names and widths

#if VM_TRACE
#include "verilated_vcd_c.h"
#endif

namespace {

// Protocol constants (sim/bus_client.py).
constexpr uint8_t OP_WRITE = 0x01;
constexpr uint8_t OP_READ = 0x02;
constexpr uint8_t OP_WAIT_REG = 0x03;
constexpr uint8_t OP_CYCLE = 0x04;
constexpr uint8_t OP_QUIT = 0x05;
constexpr uint8_t STATUS_OK = 0;
constexpr uint8_t STATUS_ERROR = 1;
constexpr size_t WAIT_REQ_SIZE = 24;   // ADDR, MASK, VALUE, POLL u32; MAX_CYCLES u64

constexpr uint64_t HALF_PERIOD_PS = 5000;   // the cocotb clock: 10 ns
constexpr int RESET_EDGES = 2;

constexpr uint64_t width_mask(int width) {
    return width >= 64 ? ~uint64_t(0) : ((uint64_t(1) << width) - 1);
}
constexpr uint64_t ADDR_MASK = width_mask(NITROD_ADDR_WIDTH);
constexpr uint64_t W_DATA_MASK = width_mask(NITROD_W_DATA_WIDTH);

uint32_t get_u32(const uint8_t* p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint64_t get_u64(const uint8_t* p) { return uint64_t(get_u32(p)) | uint64_t(get_u32(p + 4)) << 32; }
void put_u32(std::vector<uint8_t>& out, uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(uint8_t(v >> (8 * i)));
}
void put_u64(std::vector<uint8_t>& out, uint64_t v) {
    put_u32(out, uint32_t(v));
    put_u32(out, uint32_t(v >> 32));
}

// WAIT_REG looks whether the host is still there every this many cycles.
constexpr uint64_t HANGUP_CHECK_CYCLES = uint64_t(1) << 20;

// The host closed the connection while the server was busy.
struct HostGone {};

// A malformed request: answered with STATUS_ERROR and this message.
struct RequestError {
    std::string message;
};

RequestError request_error(const char* format, ...) __attribute__((format(printf, 1, 2)));
RequestError request_error(const char* format, ...) {
    char text[256];
    va_list args;
    va_start(args, format);
    vsnprintf(text, sizeof text, format, args);
    va_end(args);
    return RequestError{text};
}

class Bus {
public:
    Bus(VerilatedContext* context, unsigned read_latency, const char* trace_file)
        : top_(new Vtop(context, "")), latency_(read_latency) {
#if VM_TRACE
        if (trace_file) {
            trace_.reset(new VerilatedVcdC);
            top_->trace(trace_.get(), 99);
            trace_->open(trace_file);
        }
#else
        (void)trace_file;
#endif
    }

    ~Bus() {
        top_->final();
#if VM_TRACE
        if (trace_) trace_->close();
#endif
    }

    // Reset as sim/tb.py start_clock_and_reset does under cocotb, then one more cycle with
    // the bus inputs at 0 (sim/bus_server.py _Bus.start): at time 0 the clock rises (the
    // model starts with clk low), rst is high for that rising edge and the next, low from
    // the third on; cycle 0 starts at the falling edge after the third.
    void start() {
        top_->clk = 0;
        top_->rst = 1;
        top_->NITROD_ADDR = 0;
        top_->NITROD_W_DATA = 0;
        top_->NITROD_W_EN = 0;
        top_->NITROD_R_EN = 0;
        top_->eval();
        for (int i = 0; i < RESET_EDGES; ++i) {
            rise();
            fall();
        }
        top_->rst = 0;
        rise();
        fall();
        cycle_ = 0;
    }

    uint64_t cycle() const { return cycle_; }

    void check_range(uint64_t addr, uint64_t count) const {
        if (NITROD_ADDR_WIDTH < 40 && addr + count > (uint64_t(1) << (NITROD_ADDR_WIDTH % 40))) {
            throw request_error("addresses 0x%" PRIx64 "..0x%" PRIx64 " outside the %d-bit bus",
                                addr, addr + count - 1, int(NITROD_ADDR_WIDTH));
        }
    }

    void write(uint64_t addr, const uint8_t* words, uint64_t count) {
        if (count == 0) return;
        check_range(addr, count);
        top_->NITROD_W_EN = 1;
        for (uint64_t i = 0; i < count; ++i) {
            top_->NITROD_ADDR = (addr + i) & ADDR_MASK;
            top_->NITROD_W_DATA = uint64_t(get_u32(words + 4 * i)) & W_DATA_MASK;
            tick();
        }
        top_->NITROD_W_EN = 0;
    }

    // Pipelined read: r_en high for count cycles; the word of the read issued in cycle t - L
    // is sampled at the falling edge t cycles into the request.
    void read(uint64_t addr, uint64_t count, std::vector<uint8_t>& out) {
        if (count == 0) return;
        check_range(addr, count);
        top_->NITROD_R_EN = 1;
        top_->NITROD_ADDR = addr & ADDR_MASK;
        const uint64_t last = count + latency_ - 1;
        for (uint64_t t = 1; t <= last; ++t) {
            tick();
            if (t >= latency_) put_u32(out, r_word());
            if (t < count) {
                top_->NITROD_ADDR = (addr + t) & ADDR_MASK;
            } else if (t == count) {
                top_->NITROD_R_EN = 0;
            }
        }
    }

    uint32_t read_one(uint64_t addr) {
        std::vector<uint8_t> word;
        read(addr, 1, word);
        return get_u32(word.data());
    }

    void idle(uint64_t cycles) {
        for (uint64_t i = 0; i < cycles; ++i) tick();
    }

private:
    uint32_t r_word() const { return uint32_t(uint64_t(top_->NITROD_R_DATA) & 0xFFFFFFFFu); }

    void eval_and_dump() {
        top_->eval();
#if VM_TRACE
        if (trace_) trace_->dump(time_ps_);
#endif
    }
    // Rising edges at 0, 10, 20, ... ns, falling edges at 5, 15, ... ns (trace times in ps).
    void rise() {
        top_->clk = 1;
        eval_and_dump();
    }
    void fall() {
        time_ps_ += HALF_PERIOD_PS;
        top_->clk = 0;
        eval_and_dump();
        time_ps_ += HALF_PERIOD_PS;
    }
    // One clock cycle from just after a falling edge to just after the next one.
    void tick() {
        rise();
        fall();
        ++cycle_;
    }

    std::unique_ptr<Vtop> top_;
    uint64_t latency_;
    uint64_t cycle_ = 0;
    uint64_t time_ps_ = 0;
#if VM_TRACE
    std::unique_ptr<VerilatedVcdC> trace_;
#endif
};

// ------------------------------------------------------------------------------ socket

// The connection to the host, buffered both ways: requests are read in as large pieces as
// are there, replies collected and sent when the host has sent nothing more to handle, or
// when FLUSH_REPLIES or FLUSH_BYTES have piled up.  The host reads every reply in order, so holding them back
// until the server would wait for the host cannot deadlock.
class Connection {
public:
    explicit Connection(int fd) : fd_(fd) {}

    // Fill `out` with the next n bytes; false at end of file.
    bool read(uint8_t* out, size_t n) {
        while (in_.size() - in_pos_ < n) {
            if (!fill(n - (in_.size() - in_pos_))) return false;
        }
        std::memcpy(out, in_.data() + in_pos_, n);
        in_pos_ += n;
        return true;
    }

    bool reply(uint8_t status, const uint8_t* payload, size_t length) {
        const uint8_t head[8] = {status, 0, 0, 0, uint8_t(length), uint8_t(length >> 8),
                                 uint8_t(length >> 16), uint8_t(length >> 24)};
        out_.insert(out_.end(), head, head + 8);
        out_.insert(out_.end(), payload, payload + length);
        return (++replies_ < FLUSH_REPLIES && out_.size() < FLUSH_BYTES) || flush();
    }

    bool flush() {
        size_t sent = 0;
        while (sent < out_.size()) {
            ssize_t k = ::send(fd_, out_.data() + sent, out_.size() - sent, MSG_NOSIGNAL);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) return false;
            sent += size_t(k);
        }
        out_.clear();
        replies_ = 0;
        return true;
    }

    // True if the host has closed the connection (checked during long waits, so that a
    // server whose host died does not run on for up to MAX_CYCLES).
    bool hung_up() {
        uint8_t byte;
        ssize_t k = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        return k == 0;
    }

private:
    bool fill(size_t want) {
        if (in_pos_ > 0) {   // drop what was read
            in_.erase(in_.begin(), in_.begin() + std::ptrdiff_t(in_pos_));
            in_pos_ = 0;
        }
        const size_t old = in_.size();
        const size_t room = want > (1u << 16) ? want : (1u << 16);
        in_.resize(old + room);
        ssize_t k;
        for (;;) {
            k = ::recv(fd_, in_.data() + old, room, MSG_DONTWAIT);
            if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                // Nothing more from the host yet: send what it may be waiting for, then wait.
                if (!flush()) {
                    k = 0;
                    break;
                }
                k = ::recv(fd_, in_.data() + old, room, 0);
            }
            if (k < 0 && errno == EINTR) continue;
            break;
        }
        in_.resize(old + (k > 0 ? size_t(k) : 0));
        return k > 0;
    }

    // Replies are sent at the latest when this many are waiting (the host may be waiting
    // for the first of them while it still sends requests: SimBus.max_pending_writes)
    // or when they reach this many bytes.
    static constexpr unsigned FLUSH_REPLIES = 16;
    static constexpr size_t FLUSH_BYTES = size_t(1) << 16;

    int fd_;
    unsigned replies_ = 0;
    std::vector<uint8_t> in_;
    size_t in_pos_ = 0;
    std::vector<uint8_t> out_;
};

// The reply payload of one request (not QUIT); throws RequestError for a malformed one.
std::vector<uint8_t> handle(Bus& bus, Connection& host, uint8_t op,
                            const std::vector<uint8_t>& payload) {
    const size_t length = payload.size();
    const uint8_t* p = payload.data();
    std::vector<uint8_t> reply;
    switch (op) {
    case OP_WRITE: {
        if (length < 4 || length % 4) throw request_error("WRITE payload of %zu bytes", length);
        bus.write(get_u32(p), p + 4, (length - 4) / 4);
        return reply;
    }
    case OP_READ: {
        if (length != 8) throw request_error("READ payload of %zu bytes", length);
        const uint32_t count = get_u32(p + 4);
        reply.reserve(size_t(count) * 4);
        bus.read(get_u32(p), count, reply);
        return reply;
    }
    case OP_WAIT_REG: {
        if (length != WAIT_REQ_SIZE) throw request_error("WAIT_REG payload of %zu bytes", length);
        const uint32_t addr = get_u32(p), mask = get_u32(p + 4), value = get_u32(p + 8);
        uint64_t poll = get_u32(p + 12);
        const uint64_t max_cycles = get_u64(p + 16);
        bus.check_range(addr, 1);
        const uint64_t start = bus.cycle();
        if (poll < 1) poll = 1;
        uint32_t word;
        uint64_t waited;
        bool matched;
        uint64_t next_check = start + HANGUP_CHECK_CYCLES;
        for (;;) {
            word = bus.read_one(addr);
            waited = bus.cycle() - start;
            matched = (word & mask) == (value & mask);
            if (matched || waited >= max_cycles) break;
            const uint64_t left = max_cycles - waited;
            bus.idle(poll < left ? poll : left);
            if (bus.cycle() >= next_check) {
                if (host.hung_up()) throw HostGone{};
                next_check = bus.cycle() + HANGUP_CHECK_CYCLES;
            }
        }
        put_u64(reply, waited);
        put_u32(reply, word);
        put_u32(reply, matched ? 1 : 0);
        return reply;
    }
    case OP_CYCLE:
        put_u64(reply, bus.cycle());
        return reply;
    default:
        throw request_error("unknown request op 0x%02x", unsigned(op));
    }
}

int serve(Bus& bus, Connection& host) {
    uint8_t head[8];
    std::vector<uint8_t> payload;
    for (;;) {
        if (!host.read(head, sizeof head)) {
            std::fprintf(stderr, "native bus server: host closed the connection\n");
            return 0;
        }
        const uint8_t op = head[0];
        const uint32_t length = get_u32(head + 4);
        payload.resize(length);
        if (!host.read(payload.data(), length)) {
            std::fprintf(stderr, "native bus server: host closed the connection inside a request\n");
            return 0;
        }
        if (op == OP_QUIT) {
            host.reply(STATUS_OK, nullptr, 0);
            host.flush();
            std::fprintf(stderr, "native bus server: QUIT at cycle %" PRIu64 "\n", bus.cycle());
            return 0;
        }
        bool sent;
        try {
            const std::vector<uint8_t> reply = handle(bus, host, op, payload);
            sent = host.reply(STATUS_OK, reply.data(), reply.size());
        } catch (const RequestError& error) {
            sent = host.reply(STATUS_ERROR,
                              reinterpret_cast<const uint8_t*>(error.message.data()),
                              error.message.size());
        } catch (const HostGone&) {
            std::fprintf(stderr, "native bus server: host closed the connection during "
                                 "WAIT_REG, at cycle %" PRIu64 "\n", bus.cycle());
            return 0;
        }
        if (!sent) {
            std::fprintf(stderr, "native bus server: lost the host while replying\n");
            return 0;
        }
    }
}

int usage(const char* argv0) {
    std::fprintf(stderr, "usage: %s --socket PATH [--read-latency L] [--trace FILE]\n", argv0);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    const char* socket_path = nullptr;
    const char* trace_file = nullptr;
    long latency = 1;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--socket" && i + 1 < argc) {
            socket_path = argv[++i];
        } else if (arg == "--read-latency" && i + 1 < argc) {
            char* end = nullptr;
            latency = std::strtol(argv[++i], &end, 10);
            if (*end || latency < 1) {
                std::fprintf(stderr, "--read-latency must be an integer >= 1\n");
                return 2;
            }
        } else if (arg == "--trace" && i + 1 < argc) {
            trace_file = argv[++i];
        } else {
            return usage(argv[0]);
        }
    }
    if (!socket_path) return usage(argv[0]);
#if !VM_TRACE
    if (trace_file) {
        std::fprintf(stderr, "--trace needs a model built with Verilator's --trace\n");
        return 2;
    }
#endif

    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    if (std::strlen(socket_path) >= sizeof address.sun_path) {
        std::fprintf(stderr, "socket path too long: %s\n", socket_path);
        return 2;
    }
    std::strcpy(address.sun_path, socket_path);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
        std::fprintf(stderr, "cannot connect to %s: %s\n", socket_path, std::strerror(errno));
        return 1;
    }

    const std::unique_ptr<VerilatedContext> context(new VerilatedContext);
    int status;
    {
        if (trace_file) context->traceEverOn(true);   // before the model is made
        Bus bus(context.get(), unsigned(latency), trace_file);
        bus.start();
        Connection host(fd);
        status = serve(bus, host);
    }
    ::close(fd);
    return status;
}
