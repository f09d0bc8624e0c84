// Runs a build folder stage by stage, as its manifest says.
#pragma once

#include <string>
#include <vector>

namespace tflc {

struct Request {
  std::string build_dir;
  std::vector<std::string> inputs;  // FILE.npy in manifest input order, or NAME=FILE.npy
  std::string output_dir;
  std::string stats_path;  // empty: the stats line goes to `stats_fd`
  int stats_fd = 2;
  int progress_fd = -1;  // if set, "load FILE", "run FILE" and "done FILE" lines as each stage goes
};

// The file name (without .npy) a model output named `name` is written under: every byte outside
// [A-Za-z0-9._-] becomes '_', a leading '.' gets a '_' before it, and the result is cut to 200 bytes.
std::string output_file_stem(const std::string& name);

// Validates the manifest and inputs, runs every stage, writes the model outputs as DIR/<stem>.npy and
// the memory/time stats; throws Error on anything a user must fix.
void run(const Request& req);

}  // namespace tflc
