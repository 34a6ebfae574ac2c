// Reading a deadpeer SQLite file from probe (report, qos --from-db): the file is opened
// read-only, waits for a writer rather than failing at once, and every failure is a
// usage_error naming the file, as a bad --db is the user's to fix.
#pragma once

#include <sqlite3.h>

#include <memory>
#include <string>

namespace probe::sqlite {

struct db_closer {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct statement_finalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using db_ptr = std::unique_ptr<sqlite3, db_closer>;
using stmt_ptr = std::unique_ptr<sqlite3_stmt, statement_finalizer>;

/// Opens `path` read-only with a 5 s busy timeout; throws "cannot read PATH: why".
db_ptr open_read_only(const std::string& path);
/// Prepares `sql`; throws "cannot read PATH: why" (e.g. "file is not a database").
stmt_ptr prepare(sqlite3* db, const std::string& path, const char* sql);
/// A text column, "" for NULL.
std::string column_text(sqlite3_stmt* s, int column);

}  // namespace probe::sqlite
