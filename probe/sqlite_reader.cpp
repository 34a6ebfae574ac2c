// probe's read-only SQLite access (sqlite_reader.hpp).
#include "sqlite_reader.hpp"

#include "cli.hpp"

namespace probe::sqlite {

namespace {
constexpr int busy_timeout_ms = 5000;
}

db_ptr open_read_only(const std::string& path) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr);
  db_ptr db(raw);
  if (rc != SQLITE_OK)
    throw usage_error("cannot read " + path + ": " +
                      (raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  sqlite3_busy_timeout(db.get(), busy_timeout_ms);
  return db;
}

stmt_ptr prepare(sqlite3* db, const std::string& path, const char* sql) {
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK) {
    const std::string why = sqlite3_errmsg(db);
    sqlite3_finalize(s);
    throw usage_error("cannot read " + path + ": " + why);
  }
  return stmt_ptr(s);
}

std::string column_text(sqlite3_stmt* s, int column) {
  const auto* text = sqlite3_column_text(s, column);
  return text != nullptr ? reinterpret_cast<const char*>(text) : "";
}

}  // namespace probe::sqlite
