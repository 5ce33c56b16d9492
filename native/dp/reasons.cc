#include "reasons.h"

namespace fg {

#define FG_X(name, text) #name,
const char *const punt_reason_names[PUNT_REASON_COUNT] = {FG_PUNT_REASONS(FG_X)};
const char *const drop_reason_names[DROP_REASON_COUNT] = {FG_DROP_REASONS(FG_X)};
#undef FG_X
#define FG_X(name, text) text,
const char *const punt_reason_texts[PUNT_REASON_COUNT] = {FG_PUNT_REASONS(FG_X)};
const char *const drop_reason_texts[DROP_REASON_COUNT] = {FG_DROP_REASONS(FG_X)};
#undef FG_X

}  // namespace fg
