#include "lowrank/nn/image_input.h"

#include "lowrank/core/error.h"

namespace lowrank::nn {

int64_t positive_int_key(const Json& object, const std::string& key, const std::string& what,
                         std::optional<int64_t> fallback) {
  const auto it = object.find(key);
  if (it == object.end()) {
    LR_CHECK(fallback.has_value(), InvalidArgument, what, ": \"", key, "\" is missing");
    return *fallback;
  }
  LR_CHECK(it->is_number_integer() && it->get<int64_t>() > 0, InvalidArgument, what, ": \"", key,
           "\" must be a positive integer, got ", it->dump());
  return it->get<int64_t>();
}

ImageInput read_image_input(const Json& json, const std::string& what) {
  ImageInput in;
  const auto size = json.find("image_size");
  LR_CHECK(size != json.end(), InvalidArgument, what, ": \"image_size\" is missing");
  if (size->is_array()) {
    LR_CHECK(size->size() == 2 && (*size)[0].is_number_integer() && (*size)[1].is_number_integer(),
             InvalidArgument, what, ": \"image_size\" must be n or [height, width], got ", size->dump());
    in.height = (*size)[0].get<int64_t>();
    in.width = (*size)[1].get<int64_t>();
  } else {
    LR_CHECK(size->is_number_integer(), InvalidArgument, what,
             ": \"image_size\" must be n or [height, width], got ", size->dump());
    in.height = in.width = size->get<int64_t>();
  }
  LR_CHECK(in.height > 0 && in.width > 0, InvalidArgument, what, ": \"image_size\" must be positive, got ",
           size->dump());
  in.channels = positive_int_key(json, "num_channels", what, 1);
  in.patch_size = positive_int_key(json, "patch_size", what);
  in.num_labels = positive_int_key(json, "num_labels", what);
  LR_CHECK(in.num_labels >= 2, InvalidArgument, what, ": \"num_labels\" must be at least 2, got ",
           in.num_labels);
  LR_CHECK(in.height % in.patch_size == 0 && in.width % in.patch_size == 0, InvalidArgument, what,
           ": \"patch_size\" ", in.patch_size, " does not divide \"image_size\" ", in.height, "x", in.width);
  return in;
}

}  // namespace lowrank::nn
