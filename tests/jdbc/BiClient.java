// What a BI tool does with pg_enkf over JDBC, with the PostgreSQL JDBC driver only: connect
// with TLS verified against the test CA, discover views and functions through DatabaseMetaData
// (comments as REMARKS), read the hubverse forecasts with a PreparedStatement, check the column
// types a BI tool sees, and call enkf.forecast as a query. Exits 1 at the first failed check.
//
// Run by tests/jdbc/test_jdbc.py:
//   java -cp <classes>:/usr/share/java/postgresql.jar BiClient HOST PORT DB USER PASSWORD CA WRONG_CA TWIN
//        REFERENCE_DATE HUB_ROWS LOCATIONS

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.Date;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;

public final class BiClient {
    // The views of schema enkf are all BI-facing: these at least must exist.
    static final List<String> BI_VIEWS = List.of("forecast_quantiles", "hubverse_forecasts", "run_log", "twin_summary", "state_estimates");
    // The public SQL contract (docs/DESIGN.md): each must be listed, with its comment.
    static final List<String> API_FUNCTIONS = List.of("analyze", "create_twin", "assimilate", "forecast", "synthetic_surveillance");

    static int checks = 0;

    static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("FAILED: " + what);
            System.exit(1);
        }
        checks++;
    }

    static Connection connect(String host, String port, String db, String user, String password, String sslmode, String ca) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        p.setProperty("sslmode", sslmode);
        if (ca != null) {
            p.setProperty("sslrootcert", ca);
        }
        p.setProperty("connectTimeout", "10");
        return DriverManager.getConnection("jdbc:postgresql://" + host + ":" + port + "/" + db, p);
    }

    static void mustFail(String what, String host, String port, String db, String user, String password, String sslmode, String ca) {
        try (Connection c = connect(host, port, db, user, password, sslmode, ca)) {
            check(false, what + ": connected");
        } catch (SQLException e) {
            System.out.println("refused as expected (" + what + "): " + e.getMessage().split("\n")[0]);
            checks++;
        }
    }

    public static void main(String[] a) throws Exception {
        String host = a[0], port = a[1], db = a[2], user = a[3], password = a[4], ca = a[5], wrongCa = a[6], twin = a[7];
        Date reference = Date.valueOf(a[8]);
        int hubRows = Integer.parseInt(a[9]);
        int locations = Integer.parseInt(a[10]);

        // TLS: the certificate chain and the host name are verified; anything else is refused.
        mustFail("CA that did not sign the server certificate", host, port, db, user, password, "verify-full", wrongCa);
        mustFail("host name not in the certificate", "127.0.0.1", port, db, user, password, "verify-full", ca);
        mustFail("no TLS", host, port, db, user, password, "disable", null);

        try (Connection c = connect(host, port, db, user, password, "verify-full", ca)) {
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")) {
                check(rs.next() && rs.getBoolean(1), "the session uses TLS");
                System.out.println("TLS " + rs.getString(2) + " with sslmode=verify-full");
            }
            DatabaseMetaData md = c.getMetaData();
            System.out.println(md.getDriverName() + " " + md.getDriverVersion() + " / " + md.getDatabaseProductName() + " " + md.getDatabaseProductVersion());

            // Comments as the server has them, to compare with what the driver reports.
            Map<String, String> relComments = new HashMap<>();
            Map<String, String> relKinds = new HashMap<>();
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery(
                     "SELECT relname, relkind, obj_description(oid, 'pg_class') FROM pg_class"
                         + " WHERE relnamespace = 'enkf'::regnamespace AND relkind IN ('r', 'v', 'p')")) {
                while (rs.next()) {
                    relKinds.put(rs.getString(1), rs.getString(2));
                    relComments.put(rs.getString(1), rs.getString(3));
                }
            }

            // Views and tables, with their comments as REMARKS.
            Map<String, String> views = new TreeMap<>();
            try (ResultSet rs = md.getTables(null, "enkf", "%", new String[] {"VIEW"})) {
                while (rs.next()) {
                    views.put(rs.getString("TABLE_NAME"), rs.getString("REMARKS"));
                }
            }
            for (String v : BI_VIEWS) {
                check(views.containsKey(v), "getTables lists view enkf." + v + " (got " + views.keySet() + ")");
            }
            check(views.size() == relKinds.values().stream().filter("v"::equals).count(), "getTables lists every view of schema enkf");
            for (Map.Entry<String, String> v : views.entrySet()) {
                String remark = v.getValue();
                check(remark != null && !remark.isBlank(), "view enkf." + v.getKey() + " has a comment");
                check(remark.equals(relComments.get(v.getKey())), "REMARKS of enkf." + v.getKey() + " equal its COMMENT");
            }
            int tables = 0;
            try (ResultSet rs = md.getTables(null, "enkf", "%", new String[] {"TABLE"})) {
                while (rs.next()) {
                    String t = rs.getString("TABLE_NAME");
                    String remark = rs.getString("REMARKS");
                    check(remark != null && !remark.isBlank() && remark.equals(relComments.get(t)), "REMARKS of table enkf." + t + " equal its COMMENT");
                    tables++;
                }
            }
            check(tables >= 4, "getTables lists the tables of schema enkf");
            System.out.println("views: " + views.keySet() + "; tables: " + tables);

            // Functions, with their comments as REMARKS (one row per overload).
            Map<String, String> fnComments = new HashMap<>();
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery(
                     "SELECT proname || '_' || oid, obj_description(oid, 'pg_proc') FROM pg_proc"
                         + " WHERE pronamespace = 'enkf'::regnamespace AND prokind = 'f'")) {
                while (rs.next()) {
                    fnComments.put(rs.getString(1), rs.getString(2));
                }
            }
            Map<String, String> functions = new TreeMap<>();
            int listed = 0;
            try (ResultSet rs = md.getFunctions(null, "enkf", "%")) {
                while (rs.next()) {
                    String name = rs.getString("FUNCTION_NAME");
                    String specific = rs.getString("SPECIFIC_NAME");
                    String remark = rs.getString("REMARKS");
                    check(fnComments.containsKey(specific), "getFunctions row " + specific + " is a function of schema enkf");
                    check(remark != null && !remark.isBlank(), "function enkf." + name + " has a comment (COMMENT ON FUNCTION)");
                    check(remark.equals(fnComments.get(specific)), "REMARKS of enkf." + name + " equal its COMMENT");
                    functions.put(name, remark);
                    listed++;
                }
            }
            check(listed == fnComments.size(), "getFunctions lists every function of schema enkf (" + listed + " of " + fnComments.size() + ")");
            for (String f : API_FUNCTIONS) {
                check(functions.containsKey(f), "getFunctions lists enkf." + f);
            }
            System.out.println("functions: " + functions.keySet());

            // Every BI view: only types a BI tool maps to plain columns (no arrays, jsonb or
            // driver objects); dates as DATE, double precision as DOUBLE.
            for (String v : views.keySet()) {
                try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT * FROM enkf." + v + " LIMIT 0")) {
                    ResultSetMetaData m = rs.getMetaData();
                    StringBuilder cols = new StringBuilder();
                    for (int i = 1; i <= m.getColumnCount(); i++) {
                        int t = m.getColumnType(i);
                        String pg = m.getColumnTypeName(i);
                        String col = "enkf." + v + "." + m.getColumnName(i) + " (" + pg + ", JDBC type " + t + ")";
                        check(t != Types.ARRAY && t != Types.OTHER && t != Types.STRUCT && t != Types.JAVA_OBJECT
                                && t != Types.BINARY && t != Types.VARBINARY && t != Types.LONGVARBINARY && t != Types.SQLXML,
                            col + " is a plain SQL type");
                        check(!pg.startsWith("json") && !pg.startsWith("_"), col + " is neither json nor an array");
                        if (pg.equals("date")) {
                            check(t == Types.DATE, col + " is DATE");
                        }
                        if (pg.equals("float8")) {
                            check(t == Types.DOUBLE, col + " is DOUBLE");
                        }
                        cols.append(m.getColumnName(i)).append(':').append(pg).append(' ');
                    }
                    System.out.println("enkf." + v + ": " + cols.toString().trim());
                }
            }

            // The hubverse forecasts of one twin and reference date, through a PreparedStatement.
            String hub = "SELECT model_id, reference_date, target, horizon, target_end_date, location, output_type, output_type_id, value"
                + " FROM enkf.hubverse_forecasts WHERE model_id = ? AND reference_date = ?"
                + " AND output_type = 'quantile' AND horizon >= 0"
                + " ORDER BY location, horizon, output_type_id::float8";
            try (PreparedStatement ps = c.prepareStatement(hub)) {
                ps.setString(1, twin);
                ps.setDate(2, reference);
                try (ResultSet rs = ps.executeQuery()) {
                    ResultSetMetaData m = rs.getMetaData();
                    check(m.getColumnType(2) == Types.DATE && m.getColumnType(5) == Types.DATE, "hubverse dates are DATE");
                    check(m.getColumnType(4) == Types.INTEGER, "hubverse horizon is INTEGER");
                    check(m.getColumnType(8) == Types.VARCHAR && m.getColumnType(9) == Types.DOUBLE, "hubverse output_type_id is VARCHAR (quantile levels, pmf classes, sample ids), value DOUBLE");
                    check(m.getColumnType(1) == Types.VARCHAR && m.getColumnType(6) == Types.VARCHAR, "hubverse text columns are VARCHAR");
                    int rows = 0, withheld = 0;
                    String group = null;
                    double lastLevel = -1, lastValue = Double.NEGATIVE_INFINITY;
                    while (rs.next()) {
                        rows++;
                        check(rs.getString(1).equals(twin) && rs.getDate(2).equals(reference), "rows match the bound parameters");
                        check(rs.getDate(5).toLocalDate().equals(reference.toLocalDate().plusDays(7L * rs.getInt(4))),
                            "target_end_date = reference_date + 7 x horizon");
                        check("quantile".equals(rs.getString(7)), "output_type is quantile");
                        String g = rs.getString(6) + "/" + rs.getInt(4);
                        double level = Double.parseDouble(rs.getString(8)), value = rs.getDouble(9);
                        if (rs.wasNull()) {
                            // Withheld by small-cell suppression (a value between 0 and the
                            // threshold, docs/hipaa.md): a NULL the BI tool must show as such.
                            withheld++;
                            if (!g.equals(group)) {
                                lastValue = Double.NEGATIVE_INFINITY;
                            }
                        } else {
                            check(Double.isFinite(value) && (value == 0 || value >= 11), "value is 0, or a finite count at least the suppression threshold");
                            if (g.equals(group)) {
                                check(level > lastLevel && value >= lastValue, "quantiles increase with their level in " + g);
                            }
                            lastValue = value;
                        }
                        group = g;
                        lastLevel = level;
                    }
                    check(rows == hubRows, "hubverse rows " + rows + " = " + hubRows);
                    check(withheld < rows, "not every value is withheld");
                    System.out.println("hubverse_forecasts: " + rows + " rows for " + twin + " " + reference + " (" + withheld + " withheld)");
                }
            }

            // enkf.forecast called as a query, as a BI tool's custom SQL would.
            try (PreparedStatement ps = c.prepareStatement("SELECT * FROM enkf.forecast(?)")) {
                ps.setString(1, twin);
                try (ResultSet rs = ps.executeQuery()) {
                    ResultSetMetaData m = rs.getMetaData();
                    String[] names = {"location", "reference_date", "horizon", "target_end_date", "quantile", "value"};
                    int[] types = {Types.VARCHAR, Types.DATE, Types.INTEGER, Types.DATE, Types.DOUBLE, Types.DOUBLE};
                    check(m.getColumnCount() == names.length, "enkf.forecast returns " + names.length + " columns");
                    for (int i = 0; i < names.length; i++) {
                        check(m.getColumnName(i + 1).equals(names[i]) && m.getColumnType(i + 1) == types[i],
                            "enkf.forecast column " + (i + 1) + " is " + names[i] + " of JDBC type " + types[i]);
                    }
                    int rows = 0;
                    while (rs.next()) {
                        rows++;
                        check(Double.isFinite(rs.getDouble("value")), "forecast values are finite");
                    }
                    // Default: 4 horizons and the 23 FluSight quantile levels per location.
                    check(rows == locations * 4 * 23, "enkf.forecast rows " + rows + " = " + (locations * 4 * 23));
                    System.out.println("enkf.forecast('" + twin + "'): " + rows + " rows");
                }
            }
        }
        System.out.println("OK: " + checks + " checks");
    }
}
