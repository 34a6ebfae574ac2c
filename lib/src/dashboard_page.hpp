// The page GET / serves (dashboard_page.cpp).
#pragma once

#include <string_view>

namespace deadpeer::detail {

extern const std::string_view dashboard_page;

}  // namespace deadpeer::detail
