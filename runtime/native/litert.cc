#include "litert.h"

namespace tflc {
namespace {

// LiteRtStatus values (litert_common.h); the 2.3 library exports no LiteRtGetStatusString.
const char* status_name(LiteRtStatus s) {
  switch (s) {
    case 1: return "invalid argument";
    case 2: return "memory allocation failure";
    case 3: return "runtime failure";
    case 4: return "missing input tensor";
    case 5: return "unsupported";
    case 6: return "not found";
    case 7: return "timeout expired";
    case 8: return "wrong version";
    case 9: return "unknown error";
    case 10: return "already exists";
    case 100: return "cancelled";
    case 500: return "file I/O error";
    case 501: return "invalid flatbuffer";
    case 502: return "dynamic loading error";
    case 503: return "serialization error";
    case 504: return "compilation error";
    case 1000: return "index out of bounds";
    case 1001: return "invalid IR type";
    case 1002: return "invalid graph invariant";
    default: return "error";
  }
}

Port port(LiteRtTensor t, const std::string& label) {
  Port p{};
  const char* name = nullptr;
  check(LiteRtGetTensorName(t, &name), label + ": tensor name");
  p.name = name ? name : "";
  LiteRtTensorTypeId id;
  check(LiteRtGetTensorTypeId(t, &id), label + ": tensor type of '" + p.name + "'");
  if (id != kLiteRtRankedTensorType) throw Error(label + ": tensor '" + p.name + "' has no fixed rank");
  check(LiteRtGetRankedTensorType(t, &p.type), label + ": tensor type of '" + p.name + "'");
  if (p.type.layout.rank > LITERT_TENSOR_MAX_RANK) throw Error(label + ": tensor '" + p.name + "' has rank over 8");
  p.dtype = dtype_by_litert(p.type.element_type);
  for (unsigned i = 0; i < p.type.layout.rank; ++i) p.shape.push_back(p.type.layout.dimensions[i]);
  LiteRtQuantizationTypeId q = kLiteRtQuantizationNone;
  check(LiteRtGetQuantizationTypeId(t, &q), label + ": quantization of '" + p.name + "'");
  p.quantization = q;
  if (q == kLiteRtQuantizationPerTensor) {
    LiteRtQuantizationPerTensor pt{};
    check(LiteRtGetPerTensorQuantization(t, &pt), label + ": quantization of '" + p.name + "'");
    p.scale = pt.scale;
    p.zero_point = pt.zero_point;
  }
  return p;
}

// LiteRT 2.3's CompiledModel never writes a subgraph output that a WHILE (or IF) op produces directly
// into the output buffer: the caller reads back uninitialised memory (seen from Python's CompiledModel
// too, while the Interpreter returns the right values). Refuse such a stage rather than hand on garbage.
void check_not_control_flow(LiteRtTensor t, const std::string& name, const std::string& label) {
  bool has_op = false;
  LiteRtTensorDefiningOp def{};
  check(LiteRtGetTensorDefiningOp(t, &has_op, &def), label + ": producer of '" + name + "'");
  if (!has_op) return;
  LiteRtOpCode code = 0;
  check(LiteRtGetOpCode(def.op, &code), label + ": producer of '" + name + "'");
  if (code == kLiteRtOpCodeTflWhile || code == kLiteRtOpCodeTflIf)
    throw Error(label + ": output '" + name + "' comes straight from a " + (code == kLiteRtOpCodeTflWhile ? "WHILE" : "IF") +
                " op, which LiteRT 2.3's CompiledModel does not copy into output buffers (it returns "
                "uninitialised memory); cut the model elsewhere, or run it with tflc run");
}

size_t byte_size(const Port& p, const std::string& label) {
  if (!p.dtype) throw Error(label + ": tensor '" + p.name + "' has an element type a build cannot hand off");
  for (int64_t d : p.shape)
    if (d < 0) throw Error(label + ": tensor '" + p.name + "' has a dynamic shape " + shape_str(p.shape));
  return element_count(p.shape, uint64_t{1} << 40) * p.dtype->size;
}

}  // namespace

void check(LiteRtStatus s, const std::string& what) {
  if (s != 0) throw Error(what + ": LiteRT " + status_name(s) + " (status " + std::to_string(s) + ")");
}

Value make_value(LiteRtEnvironment env, const TensorMeta& meta, const std::string& what) {
  if (meta.shape.size() > LITERT_TENSOR_MAX_RANK)
    throw Error(what + ": rank " + std::to_string(meta.shape.size()) + " is more than LiteRT's 8");
  LiteRtRankedTensorType type{};
  type.element_type = static_cast<LiteRtElementType>(meta.dtype->litert);
  type.layout.rank = static_cast<unsigned>(meta.shape.size()) & 0x7f;
  for (size_t i = 0; i < meta.shape.size(); ++i) type.layout.dimensions[i] = static_cast<int32_t>(meta.shape[i]);
  LiteRtTensorBuffer b = nullptr;
  check(LiteRtCreateManagedTensorBuffer(env, kLiteRtTensorBufferTypeHostMemory, &type, meta.bytes(), &b),
        what + ": buffer");
  return Value{meta, TensorBuffer(b)};
}

Locked::Locked(LiteRtTensorBuffer b, LiteRtTensorBufferLockMode mode, const std::string& what) : buf_(b) {
  check(LiteRtLockTensorBuffer(b, &addr_, mode), what + ": lock");
}

Locked::~Locked() { LiteRtUnlockTensorBuffer(buf_); }

Environment make_environment() {
  LiteRtEnvironment env = nullptr;
  check(LiteRtCreateEnvironment(0, nullptr, &env), "LiteRT environment");
  return Environment(env);
}

LoadedStage::LoadedStage(LiteRtEnvironment env, int fd, uint64_t size, const std::string& label)
    : env_(env), label_(label) {
  LiteRtModel m = nullptr;
  check(LiteRtCreateModelFromFd(env, fd, 0, size, &m), label + ": LiteRT cannot load it");
  model_.reset(m);
  LiteRtOptions o = nullptr;
  check(LiteRtCreateOptions(&o), label + ": options");
  options_.reset(o);
  check(LiteRtSetOptionsHardwareAccelerators(o, kLiteRtHwAcceleratorCpu), label + ": options");
  LiteRtCompiledModel c = nullptr;
  check(LiteRtCreateCompiledModel(env, m, o, &c), label + ": LiteRT cannot compile it for the CPU");
  compiled_.reset(c);
  // Stages carry no signature defs; LiteRT then makes signature 0 from the main subgraph's inputs/outputs.
  LiteRtParamIndex nsig = 0;
  check(LiteRtGetNumModelSignatures(m, &nsig), label + ": signatures");
  if (nsig < 1) throw Error(label + ": LiteRT found no signature to run");
  LiteRtSignature sig = nullptr;
  check(LiteRtGetModelSignature(m, 0, &sig), label + ": signature 0");
  LiteRtParamIndex nin = 0, nout = 0;
  check(LiteRtGetNumSignatureInputs(sig, &nin), label + ": inputs");
  check(LiteRtGetNumSignatureOutputs(sig, &nout), label + ": outputs");
  for (LiteRtParamIndex i = 0; i < nin; ++i) {
    LiteRtTensor t = nullptr;
    check(LiteRtGetSignatureInputTensorByIndex(sig, i, &t), label + ": input " + std::to_string(i));
    inputs_.push_back(port(t, label));
  }
  for (LiteRtParamIndex i = 0; i < nout; ++i) {
    LiteRtTensor t = nullptr;
    check(LiteRtGetSignatureOutputTensorByIndex(sig, i, &t), label + ": output " + std::to_string(i));
    outputs_.push_back(port(t, label));
    check_not_control_flow(t, outputs_.back().name, label);
  }
}

std::vector<Value> LoadedStage::run(const std::vector<LiteRtTensorBuffer>& in) {
  std::vector<Value> outs;
  std::vector<LiteRtTensorBuffer> out_bufs;
  for (const Port& p : outputs_) {
    byte_size(p, label_);  // a type or shape a build cannot hand off is refused here
    outs.push_back(make_value(env_, TensorMeta{p.dtype, p.shape}, label_ + ": output '" + p.name + "'"));
    out_bufs.push_back(outs.back().buf.get());
  }
  std::vector<LiteRtTensorBuffer> in_bufs(in);
  check(LiteRtRunCompiledModel(compiled_.get(), 0, in_bufs.size(), in_bufs.data(), out_bufs.size(), out_bufs.data()),
        label_ + ": LiteRT failed to run it");
  return outs;
}

}  // namespace tflc
